#pragma once
/// @file blockwise_types.hpp
/// @brief What a blockwise run takes and gives: its input (`BlockInput`), model (`BlockModel`), settings
/// (`BlockwiseOptions`), progress, summary and an output's status. The run itself: `qlty/blockwise.hpp`
/// (one process, or a share of the blocks) and `qlty/mpi.hpp` (many processes).

#include <qlty/blend.hpp>
#include <qlty/blockwise/fingerprint.hpp>
#include <qlty/error.hpp>
#include <qlty/geometry.hpp>
#include <qlty/zarr.hpp>

#include <torch/torch.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace qlty {

/// @brief A model for blockwise runs: windows (B, C, *W) float32 on the run's device -> predictions
/// (B, C', *W), floating point. A TorchScript module, a torch::nn module or a lambda.
using BlockModel = std::function<torch::Tensor(const torch::Tensor&)>;

/// @brief The input of a blockwise run, (N, C, *S) with 2 or 3 spatial axes, read one box at a time.
class BlockInput {
 public:
  /// @brief Reads the box [offset, offset + shape) as a CPU tensor of any dtype (a view is fine).
  using Reader = std::function<torch::Tensor(const std::vector<int64_t>& offset, const std::vector<int64_t>& shape)>;

  /// @brief An input of `shape` read by `read`; `name` goes into messages. `id` identifies the input's content in
  /// the output's manifest: a resume with another id is refused (empty: not checked).
  /// `source` is the file or folder it reads (empty for data in memory): an output there, or around it, or inside
  /// it, is refused. `axes` says how the source's axes were reordered into (N, C, *S) (e.g. "xyz"; empty: not
  /// reordered): a resume that reorders them otherwise is refused, even where the shape is the same.
  BlockInput(std::vector<int64_t> shape, Reader read, std::string name, std::string id = "", std::string source = "",
             std::string axes = "")
      : shape_(std::move(shape)),
        read_(std::move(read)),
        name_(std::move(name)),
        id_(std::move(id)),
        source_(std::move(source)),
        axes_(std::move(axes)) {
    TORCH_CHECK_VALUE(shape_.size() == 4 || shape_.size() == 5, "qlty::BlockInput(", name_,
                      "): the input must be 4-D (N, C, Y, X) or 5-D (N, C, Z, Y, X), got shape ",
                      c10::IntArrayRef(shape_));
    for (auto s : shape_)
      TORCH_CHECK_VALUE(s >= 1, "qlty::BlockInput(", name_, "): every size must be >= 1, got shape ",
                        c10::IntArrayRef(shape_));
  }

  /// @brief A tensor (N, C, *S) of any dtype, on any device; read as views, without copies. `name` goes into
  /// messages (default: the tensor's shape); `id`, the caller's name for the data (e.g. the file it came from and
  /// its version), is checked on resume; `source`, the file it was read from, if any (see the constructor).
  static BlockInput from_tensor(const torch::Tensor& x, const std::string& name = "", const std::string& id = "",
                                const std::string& source = "") {
    TORCH_CHECK_VALUE(x.defined(), "qlty::BlockInput::from_tensor: x is an undefined tensor");
    auto t = x.detach();
    return BlockInput(t.sizes().vec(), detail::box_reader(t),
                      name.empty() ? c10::str("tensor of shape ", x.sizes()) : name, id, source);
  }

  /// @brief A Zarr array (N, C, *S), read chunk-parallel; its id is its resolved path and checksums of its metadata
  /// and of its first, middle and last chunks.
  static BlockInput from_zarr(const zarr::Array& array) {
    return BlockInput(
        array.shape(),
        [array](const std::vector<int64_t>& offset, const std::vector<int64_t>& shape) {
          return array.read(offset, shape);
        },
        array.path(), detail::zarr_fingerprint(array), array.path());
  }

  const std::vector<int64_t>& shape() const { return shape_; }
  const std::string& name() const { return name_; }
  /// @brief What the input is, for resume checks (see the constructor).
  const std::string& id() const { return id_; }
  /// @brief The file or folder the input is read from ("" for data in memory).
  const std::string& source() const { return source_; }
  /// @brief How the source's axes were reordered into (N, C, *S) ("" when they were not; see the constructor).
  const std::string& axes() const { return axes_; }
  /// @brief Spatial axes: 2 or 3.
  int spatial_dims() const { return static_cast<int>(shape_.size()) - 2; }

  /// @brief The box [offset, offset + shape); a reader that returns another shape is an error.
  torch::Tensor read(const std::vector<int64_t>& offset, const std::vector<int64_t>& shape) const {
    auto t = read_(offset, shape);
    if (!t.defined() || t.sizes() != c10::IntArrayRef(shape))
      throw Error("io", name_ + ": reading the box at " + c10::str(c10::IntArrayRef(offset)) + " of shape " +
                            c10::str(c10::IntArrayRef(shape)) + " returned " +
                            (t.defined() ? "shape " + c10::str(t.sizes()) : std::string("no tensor")));
    return t;
  }

 private:
  std::vector<int64_t> shape_;
  Reader read_;
  std::string name_, id_, source_, axes_;
};

/// @brief Progress of a blockwise run, passed to BlockwiseOptions::progress after every batch and block.
struct BlockwiseProgress {
  int64_t blocks_total = 0;     ///< blocks of the whole output
  int64_t blocks_done = 0;      ///< blocks done, including those done by earlier runs
  int64_t windows_planned = 0;  ///< windows this run computes when it runs to the end
  int64_t windows_done = 0;     ///< windows this run has computed so far
  double seconds = 0;           ///< since this run started
};

/// @brief Settings of a blockwise run.
struct BlockwiseOptions {
  PerAxis window = 64;         ///< window per spatial axis (one number or one per axis)
  PerAxis step = 48;           ///< step per spatial axis
  PerAxis border = 0;          ///< border per spatial axis (0: none), for Blend::border()
  double border_weight = 0.1;  ///< weight of border pixels when blending, in [0, 1], for Blend::border()
  /// How windows are blended: border weighting (from `border` and `border_weight`), constant, gaussian or custom.
  Blend blend = Blend::border();
  /// Inputs smaller than the window along an axis: padded for the windows, outputs cropped back (none: refused).
  Pad pad = Pad::none();
  /// Test-time augmentation by mirroring: the model also runs on the window flipped along every non-empty subset
  /// of `tta_axes` (spatial axes, 0-based; empty: all), each prediction is flipped back, and their mean is blended.
  /// The spread of the flips is part of `write_std`.
  bool tta_flip = false;
  std::vector<int64_t> tta_axes;
  /// The dtype windows reach the model in (float32, float16, bfloat16). On CUDA, a float16 or bfloat16 precision
  /// runs the model under autocast with float32 windows; elsewhere the windows are cast and the model must take
  /// them (convert its parameters). Predictions are accumulated in float32 either way.
  torch::ScalarType precision = torch::kFloat;
  /// Applied over the channels to the blended result (and to the mean of the flips): none, sigmoid or softmax.
  /// `write_std` stays the spread of the raw predictions; `write_argmax` takes the result.
  enum class Activation { None, Sigmoid, Softmax } activation = Activation::None;
  /// A 2D model over a 3D input: windows of depth 1 reach the model as (B, C, Y, X) (MONAI's SliceInferer).
  bool slicewise = false;
  /// The dtype of the mean and std arrays: float32, float16, or uint8 (values clamped to [0, 1], times 255,
  /// rounded: for probabilities).
  torch::ScalarType output_dtype = torch::kFloat;
  int64_t batch_size = 8;              ///< windows per model call
  torch::Device device = torch::kCPU;  ///< where windows go for the model, and where blending happens
  std::vector<int64_t> chunks;         ///< output chunk per spatial axis; empty: 64 (3D) or 256 (2D), clipped
  std::vector<int64_t> block;          ///< block per spatial axis, rounded up to whole chunks; empty: from block_bytes
  int64_t block_bytes = int64_t(1) << 30;  ///< memory for one block's input halo and accumulators (automatic blocks)
  bool write_mean = true;                  ///< write the blended prediction (`OUT/0`)
  bool write_std = false;                  ///< write the spread of overlapping predictions (`OUT/std`)
  bool write_argmax = false;               ///< write the argmax over channels (`OUT/labels/argmax/0`)
  std::vector<zarr::Codec> codecs = {zarr::Codec::blosc()};  ///< compression of the outputs
  /// The output's format: 2 writes OME-Zarr 0.4 on Zarr v2, 3 writes OME-Zarr 0.5 on Zarr v3 (`attributes.ome`,
  /// `dimension_names`), which napari (ome-zarr-py >= 0.12), Neuroglancer and vizarr read.
  int zarr_format = 2;
  /// Zarr v3 only: shard per spatial axis, a multiple of the chunks; each shard is one file holding its chunks and
  /// their index (`sharding_indexed`), so a large output is thousands of files, not millions. Blocks are whole
  /// shards, so no two blocks, ranks or parts write one shard. Empty: not sharded.
  std::vector<int64_t> shards;
  std::string model_id;  ///< names the model in the manifest (e.g. its file's checksum); a resume must match
  bool overwrite =
      false;             ///< replace an existing output folder (only a qlty output or a Zarr node) instead of resuming
  bool durable = true;   ///< flush each block to the device before marking it done (survives power loss)
  bool prefetch = true;  ///< read the next block's input while the current one computes
  int64_t max_blocks = -1;  ///< stop after computing this many blocks (-1: all); the rest stays for a rerun
  /// Compute only part `first` of `second` (0-based): a deterministic, contiguous share of the blocks in run order,
  /// for job arrays and independent processes on shared storage. The parts together give the bytes of one run.
  std::pair<int64_t, int64_t> part{0, 1};
  nlohmann::json attributes = nlohmann::json::object();    ///< extra attributes for the output group (`qlty`)
  std::function<void(const BlockwiseProgress&)> progress;  ///< called after every batch and block
};

/// @brief What a blockwise run did.
struct BlockwiseSummary {
  int64_t blocks_total = 0;      ///< blocks of the output
  int64_t blocks_skipped = 0;    ///< done by earlier runs
  int64_t blocks_computed = 0;   ///< done by this run
  int64_t windows_grid = 0;      ///< windows of the whole grid (N * windows per image)
  int64_t windows_computed = 0;  ///< model evaluations of windows by this run
  int64_t windows_received = 0;  ///< window predictions taken from another worker's carry file instead of the model
  double model_seconds = 0;      ///< time spent in the model's calls (the rest is reading, blending, writing)
  int64_t out_channels = 0;      ///< C' of the model
  std::vector<int64_t> block;    ///< the block shape used (spatial)
  std::vector<int64_t> chunks;   ///< the output chunk shape (spatial)
  double seconds = 0;
  bool complete = false;  ///< every block is done
};

/// @brief One part of a split run (`BlockwiseOptions::part`) as an output records it.
struct BlockwisePartStatus {
  int64_t index = 0, count = 1;  ///< part `index` of `count`
  int64_t blocks = 0;            ///< blocks in its share
  int64_t blocks_done = 0;       ///< of those, done (by any process)
  bool started = false;          ///< a process has run this part (false: never started, "missing")
};

/// @brief Parts of one part count that BlockwiseStatus::parts leaves out: never started, of a count above
/// BlockwiseStatus::kMostListed.
struct BlockwiseUnlistedParts {
  int64_t count = 0;    ///< the part count K
  int64_t missing = 0;  ///< parts of K never started, not in `parts`
};

/// @brief What an output folder holds: its manifest, how many blocks are done, and the parts run on it.
struct BlockwiseStatus {
  /// Part counts up to this many parts are listed part by part; above it, only the parts started.
  static constexpr int64_t kMostListed = 4096;
  nlohmann::json manifest;
  int64_t blocks_total = 0;
  int64_t blocks_done = 0;                 ///< marker files of blocks of the output
  std::vector<BlockwisePartStatus> parts;  ///< for each part count used on the output, every part of it (see above)
  std::vector<BlockwiseUnlistedParts> unlisted;  ///< part counts above kMostListed: the parts not listed
};

}  // namespace qlty
