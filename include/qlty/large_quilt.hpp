#pragma once
/// @file large_quilt.hpp
/// @brief Disk-cached quilts: `LargeNCYXQuilt`, `LargeNCZYXQuilt`. Patches are stitched one at a time into
/// accumulators kept in Zarr arrays, through a bounded cache of chunks, with atomic, resumable checkpoints.
///
/// Files under a prefix P:
/// - `P_acc.zarr/`: a Zarr group with the accumulators `sum` (N, C, *S), `sum_sq` and `var_sum` (same); its
///   attributes hold the parameters; `stitched` counts, per patch, the times it was added by the last checkpoint
///   (the weight sums follow from it and the geometry, so they are not stored); `journal` exists only while a
///   checkpoint is being applied.
/// - `P_mean.zarr`, `P_std.zarr`: what return_mean computes, (N, C, *S) float32.
///
/// The parts, each readable and tested on its own:
/// - large_quilt/chunk_store.hpp: the accumulator chunks seen through a bounded cache; changed chunks that leave
///   the cache are spilled to staged files until the next checkpoint.
/// - large_quilt/checkpoint_journal.hpp: the journaled checkpoint; every changed chunk and the stitched list are
///   staged next to their targets, a journal names them all, then they are renamed into place. Opening a prefix
///   finishes a complete journal and deletes staged files no journal names, so after a crash the arrays hold
///   exactly the patches listed as stitched (a redo journal, with the chunk data written once, not twice).
/// - this file: the quilt's API, the arithmetic (stitch, the derived weights, return_mean) and the order. What
///   bounds its speed, and what it costs next to the in-memory quilt: docs/performance.md.

#include <qlty/error.hpp>
#include <qlty/geometry.hpp>
#include <qlty/kernels/accumulate.hpp>
#include <qlty/kernels/window_weights.hpp>
#include <qlty/large_quilt/checkpoint_journal.hpp>
#include <qlty/large_quilt/chunk_store.hpp>
#include <qlty/quilt.hpp>
#include <qlty/support/fs.hpp>
#include <qlty/support/paths.hpp>
#include <qlty/weed.hpp>
#include <qlty/zarr.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace qlty {

/// @brief Settings of a disk-cached quilt beyond its geometry.
struct LargeQuiltOptions {
  int64_t cache_bytes = int64_t(512) << 20;  ///< accumulator chunks kept in memory; a full cache checkpoints
  int64_t checkpoint_every = 0;              ///< patches between checkpoints (0: by time only)
  double checkpoint_seconds = 60.0;          ///< seconds between checkpoints (0: by count only)
  bool allow_restitch = false;               ///< stitching an index twice adds it twice (else an error)
  bool track_std = true;                     ///< keep sum of squares and variances, for return_mean(std = true)
  bool durable = true;                       ///< flush checkpoints to the device (survive power loss, not only crashes)
  std::vector<zarr::Codec> output_codecs = {};  ///< codecs of prefix_mean/std.zarr (float predictions rarely compress)
  /// Images smaller than the window along an axis: padded for the windows (unstitch reads the padding), results
  /// cropped back (qlty/blend.hpp). Pad::none() refuses such images.
  Pad pad = Pad::none();
};

/// @brief The disk-cached quilt in D = 2 or 3 dimensions (see the file comment).
template <int D>
class LargeQuilt {
 public:
  /// @brief Opens or starts the accumulation under `prefix` for N images of spatial shape S. An existing
  /// `prefix_acc.zarr` with the same parameters is resumed (missing_indices() tells what is left); other
  /// parameters are an Error tagged `checkpoint`.
  LargeQuilt(std::string prefix, int64_t N, std::array<int64_t, D> S, const PerAxis& window, const PerAxis& step,
             const PerAxis& border = 0, double border_weight = 0.1, LargeQuiltOptions options = {})
      : LargeQuilt(std::move(prefix), N, S, window, step, Blend::border(border.values(), border_weight), options) {}

  /// @brief As above, windows blended with `blend` (border, constant, gaussian or custom; see qlty/blend.hpp).
  LargeQuilt(std::string prefix, int64_t N, std::array<int64_t, D> S, const PerAxis& window, const PerAxis& step,
             const Blend& blend, LargeQuiltOptions options = {})
      : prefix_(std::move(prefix)),
        N_(N),
        image_(S),
        geom_(detail::padded_shape<D>(S, window, options.pad), window, step, blend),
        opt_(options) {
    TORCH_CHECK_VALUE(N >= 1, name(), ": N must be >= 1, got ", N);
    for (int a = 0; a < D; ++a) before_[a] = (geom_.shape()[a] - image_[a]) / 2;
    geom_.check_covered(name());
    TORCH_CHECK_VALUE(!prefix_.empty(), name(), ": prefix must not be empty");
    TORCH_CHECK_VALUE(opt_.cache_bytes > 0, name(), ": cache_bytes must be > 0, got ", opt_.cache_bytes);
    TORCH_CHECK_VALUE(opt_.checkpoint_every >= 0 && opt_.checkpoint_seconds >= 0, name(),
                      ": checkpoint_every and checkpoint_seconds must be >= 0");
    grid_ = std::make_shared<const detail::Grid3>(geom_.grid3());
    weights_ = std::make_shared<const detail::RowWeights<float>>(*grid_, true);
    // Chunks a whole number of steps long, so a window touches at most ceil(window / step) + 1 per axis, grown
    // by whole steps (last axis first) to about kChunkTarget bytes per channel: small windows do not make
    // thousands of tiny files, and a row of windows still fits a modest cache.
    std::array<int64_t, D> unit{};
    const auto& P = geom_.shape();  // padded axes are one chunk: outputs crop within it
    for (int a = 0; a < D; ++a) {
      unit[a] = std::max<int64_t>(geom_.step()[a], 1);
      acc_chunk_[a] = P[a] != S[a] ? P[a] : std::min(S[a], unit[a]);
    }
    auto bytes = [&] {
      int64_t b = 4;
      for (auto c : acc_chunk_) b *= c;
      return b;
    };
    for (bool grew = true; grew && bytes() < kChunkTarget;) {
      grew = false;
      for (int a = D - 1; a >= 0 && bytes() < kChunkTarget; --a)
        if (acc_chunk_[a] < P[a]) {
          acc_chunk_[a] = std::min(P[a], acc_chunk_[a] + unit[a]);
          grew = true;
        }
    }
    stitched_.assign(static_cast<size_t>(patch_count()), 0);
    // One quilt at a time on a prefix, in this process or any other: a lock held while it is open (the kernel
    // drops it when a process dies), taken before the prefix is checked or created.
    detail::make_dirs(detail::parent_path(prefix_));
    lock_ = std::make_unique<detail::LockFile>(
        detail::join_path(detail::parent_path(prefix_), "." + detail::base_name(prefix_) + ".qlty.lock"));
    if (!lock_->try_lock(0))
      throw Error("lock", acc_path() +
                              ": another quilt has this prefix open, in this process or another; its "
                              "accumulators cannot be shared (one process at a time, or one prefix each)");
    journal_.emplace(acc_path(), std::vector<std::string>{"stitched"},
                     std::vector<std::string>(array_names().begin(), array_names().end()), opt_.durable);
    store_.emplace(acc_path(), acc_chunk_, acc_chunk_grid(), opt_.cache_bytes);
    open_or_create();
    last_checkpoint_ = std::chrono::steady_clock::now();
  }

  ~LargeQuilt() {
    try {
      checkpoint();
    } catch (...) {  // the last checkpoint stays intact; nothing to report from a destructor
    }
  }
  LargeQuilt(const LargeQuilt&) = delete;
  LargeQuilt& operator=(const LargeQuilt&) = delete;

  /// @brief Number of patches: N times the windows per image (the Python original's name: "chunks" there are
  /// patches, not the accumulator chunks on disk).
  int64_t N_chunks() const { return N_ * geom_.per_image(); }
  /// @brief Number of patches (the same as N_chunks()).
  int64_t patch_count() const { return N_chunks(); }
  /// @brief Windows along each axis.
  std::array<int64_t, D> get_times() const { return geom_.times(); }
  /// @brief 1 inside the border, 0 on it (float32, window shape).
  torch::Tensor border_tensor() const { return geom_.border_tensor(); }
  const Geometry<D>& geometry() const { return geom_; }
  const std::string& prefix() const { return prefix_; }

  /// @brief Window `index` of x (N, C, *S), as (C, *W).
  torch::Tensor unstitch(const torch::Tensor& x, int64_t index) const {
    check_index(index, "unstitch");
    TORCH_CHECK_VALUE(x.dim() == D + 2 && x.size(0) == N_, name(), ".unstitch: x must have shape (", N_, ", C, ",
                      c10::IntArrayRef(image_.data(), D), "), got ", x.sizes());
    for (int a = 0; a < D; ++a)
      TORCH_CHECK_VALUE(x.size(2 + a) == image_[a], name(), ".unstitch: x must have shape (", N_, ", C, ",
                        c10::IntArrayRef(image_.data(), D), "), got ", x.sizes());
    return window_of(detail::box_reader(x), x.size(1), index).clone();
  }
  /// @brief Window `index` of a Zarr array (N, C, *S), read from disk.
  torch::Tensor unstitch(const zarr::Array& x, int64_t index) const {
    check_index(index, "unstitch");
    const auto s = x.shape();
    bool ok = static_cast<int>(s.size()) == D + 2 && s[0] == N_;
    for (int a = 0; ok && a < D; ++a) ok = s[2 + a] == image_[a];
    TORCH_CHECK_VALUE(ok, name(), ".unstitch: the array ", x.path(), " must have shape (", N_, ", C, ",
                      c10::IntArrayRef(image_.data(), D), "), got [", c10::IntArrayRef(s), "]");
    // return_mean and checkpoints would overwrite an input that is one of the quilt's own folders (checked once
    // per input path: unstitch runs once per patch)
    {
      std::lock_guard<std::mutex> g(checked_mutex_);  // unstitch may run on several threads
      if (x.path() != checked_input_) {
        for (const char* own : {"_acc.zarr", "_mean.zarr", "_std.zarr"})
          if (detail::paths_overlap(x.path(), prefix_ + own))
            throw Error("overlap",
                        x.path() + ": " + name() + ".unstitch: the input is " + prefix_ + own +
                            " (or holds it, or lies inside it), which this quilt writes; use another prefix");
        checked_input_ = x.path();
      }
    }
    const auto read = [&x](const std::vector<int64_t>& off, const std::vector<int64_t>& ext) {
      return x.read(off, ext);
    };
    return window_of(read, s[1], index);
  }
  /// @brief The next window in index order, as (index, patch); after the last one, starts again at 0.
  template <typename X>
  std::pair<int64_t, torch::Tensor> unstitch_next(const X& x) {
    const int64_t i = next_;
    next_ = (next_ + 1) % patch_count();
    return {i, unstitch(x, i)};
  }

  /// @brief Windows `indices` of x (an in-memory tensor or a Zarr array (N, C, *S)), as (B, C, *W).
  template <typename X>
  torch::Tensor unstitch(const X& x, const std::vector<int64_t>& indices) const {
    TORCH_CHECK_VALUE(!indices.empty(), name(), ".unstitch: indices must not be empty");
    for (auto i : indices) check_index(i, "unstitch");
    std::vector<torch::Tensor> parts;
    parts.reserve(indices.size());
    for (auto i : indices) parts.push_back(unstitch(x, i));
    return torch::stack(parts);
  }

  /// @brief Adds weight * patch (and weight * patch^2, weight * patch_var) at window `index`. patch is (C, *W)
  /// or (1, C, *W); C is fixed by the first patch ever stitched under this prefix.
  void stitch(const torch::Tensor& patch, int64_t index, const std::optional<torch::Tensor>& patch_var = std::nullopt) {
    check_index(index, "stitch");
    const torch::Tensor p = squeeze_patch(patch, "patch");
    std::optional<torch::Tensor> v;
    TORCH_CHECK_VALUE(!patch_var || opt_.track_std, name(),
                      ".stitch: patch_var needs track_std (it only enters the std)");
    if (patch_var) {
      v = squeeze_patch(*patch_var, "patch_var");
      TORCH_CHECK_VALUE(v->sizes() == p.sizes(), name(), ".stitch: patch_var must have the patch's shape ", p.sizes(),
                        ", got ", v->sizes());
    }
    if (!has_arrays()) create_arrays(p.size(0));
    TORCH_CHECK_VALUE(p.size(0) == C_, name(), ".stitch: patch has ", p.size(0), " channels, but ", C_,
                      " were stitched before under ", prefix_);
    TORCH_CHECK_VALUE(opt_.allow_restitch || !stitched_[index], name(), ".stitch: index ", index,
                      " was already stitched (pass allow_restitch to add it again)");
    TORCH_CHECK_VALUE(stitched_[index] < kMaxAdds, name(), ".stitch: index ", index, " was added ", int(kMaxAdds),
                      " times, the most a quilt counts");
    add(p, index, v);
  }

  /// @brief Stitches B patches at once: patches (B, C, *W) at windows `indices` (B of them), patch_vars (B, C,
  /// *W) when given. The same bytes as stitching them one by one in this order (checkpoints included). Everything
  /// is checked before anything is added: a bad batch adds nothing.
  void stitch(const std::vector<int64_t>& indices, const torch::Tensor& patches,
              const std::optional<torch::Tensor>& patch_vars = std::nullopt) {
    const int64_t B = static_cast<int64_t>(indices.size());
    TORCH_CHECK_VALUE(patches.dim() == D + 2 && patches.size(0) == B, name(), ".stitch: patches must be (B, C, ",
                      c10::IntArrayRef(geom_.window().data(), D), ") with B = ", B, " (the number of indices), got ",
                      patches.sizes());
    TORCH_CHECK_VALUE(!patch_vars || patch_vars->sizes() == patches.sizes(), name(),
                      ".stitch: patch_vars must have the patches' shape ", patches.sizes(), ", got ",
                      patch_vars ? patch_vars->sizes() : c10::IntArrayRef{});
    TORCH_CHECK_VALUE(!patch_vars || opt_.track_std, name(),
                      ".stitch: patch_vars needs track_std (it only enters the std)");
    for (auto i : indices) check_index(i, "stitch");
    // Each index with the times it appears in the batch (sorted: no table the size of the quilt per batch).
    std::vector<int64_t> sorted(indices);
    std::sort(sorted.begin(), sorted.end());
    for (size_t k = 0; k < sorted.size();) {
      const int64_t i = sorted[k];
      size_t times = 0;
      for (; k < sorted.size() && sorted[k] == i; ++k) ++times;
      TORCH_CHECK_VALUE(opt_.allow_restitch || (!stitched_[i] && times == 1), name(), ".stitch: index ", i,
                        stitched_[i] ? " was already stitched" : " appears twice in indices",
                        " (pass allow_restitch to add it again)");
      TORCH_CHECK_VALUE(stitched_[i] + times <= kMaxAdds, name(), ".stitch: index ", i, " would be added more than ",
                        int(kMaxAdds), " times, the most a quilt counts");
    }
    TORCH_CHECK_TYPE(patches.is_floating_point() && (!patch_vars || patch_vars->is_floating_point()), name(),
                     ".stitch: patches and patch_vars must be floating point, got ", patches.scalar_type());
    if (B == 0) return;
    const auto p = patches.to(torch::kCPU, torch::kFloat32).contiguous();
    auto first = squeeze_patch(p[0], "patches");  // shape and channels, checked as for one patch
    TORCH_CHECK_VALUE(!has_arrays() || first.size(0) == C_, name(), ".stitch: patches have ", first.size(0),
                      " channels, but ", C_, " were stitched before under ", prefix_);
    std::optional<torch::Tensor> v;
    if (patch_vars) v = patch_vars->to(torch::kCPU, torch::kFloat32).contiguous();
    if (!has_arrays()) create_arrays(first.size(0));
    for (int64_t b = 0; b < B; ++b) add(p[b], indices[b], v ? std::optional<torch::Tensor>((*v)[b]) : std::nullopt);
  }

  /// @brief Mean of the stitched predictions (N, C, *S), written to `prefix_mean.zarr`; with `std`, also their
  /// standard deviation (docs/design/semantics.md), written to `prefix_std.zarr` (else the second tensor is undefined).
  /// `normalize` divides both by the mean's sum over channels. Takes a checkpoint first. With `in_memory` false
  /// the results go only to the Zarr arrays (memory stays bounded) and both tensors are undefined.
  std::tuple<torch::Tensor, torch::Tensor> return_mean(bool std = false, bool normalize = false,
                                                       bool in_memory = true) {
    TORCH_CHECK_VALUE(has_arrays(), name(), ".return_mean: nothing was stitched under ", prefix_);
    TORCH_CHECK_VALUE(!std || opt_.track_std, name(), ".return_mean: std needs track_std = true");
    checkpoint();
    std::vector<int64_t> full{N_, C_}, chunks{1, C_};
    for (int a = 0; a < D; ++a) {
      full.push_back(image_[a]);
      chunks.push_back(std::min(acc_chunk_[a], image_[a]));  // padded axes: the image, cropped out of one chunk
    }
    auto make = [&](const std::string& path) {
      zarr::ArrayOptions o(full, chunks, zarr::DataType::Float32);
      o.codecs = opt_.output_codecs;
      o.overwrite = true;
      return zarr::Array::create(path, o);
    };
    auto mean_arr = make(prefix_ + "_mean.zarr");
    std::optional<zarr::Array> std_arr;
    if (std) std_arr = make(prefix_ + "_std.zarr");
    const auto f32 = torch::TensorOptions().dtype(torch::kFloat32);  // every pixel is written below
    auto mean_out = in_memory ? detail::empty_output(full, f32) : torch::Tensor();
    auto std_out = std && in_memory ? detail::empty_output(full, f32) : torch::Tensor();
    const auto grid = acc_chunk_grid();
    int64_t per_image = 1;
    for (auto g : grid) per_image *= g;
    const bool have_var = store_->has(kVarSum);
    std::vector<int64_t> acc_shape{C_};  // an accumulator chunk without its image axis
    acc_shape.insert(acc_shape.end(), acc_chunk_.begin(), acc_chunk_.end());
    const int64_t chunk_numel = c10::multiply_integers(acc_chunk_);
    at::parallel_for(0, N_ * per_image, 1, [&](int64_t b, int64_t e) {
      // One chunk's weight sums and results at a time, in buffers the task reuses; the weight sums are computed
      // again only for a chunk whose weight signature differs from the last one's. Chunks go place by place, image
      // after image, so images stitched alike share them, and so do neighbouring inner chunks.
      std::vector<float> wsum(static_cast<size_t>(chunk_numel));
      std::vector<int64_t> wsum_sig;
      auto mean = torch::empty(acc_shape, torch::kFloat32), sd = std ? torch::empty_like(mean) : torch::Tensor();
      for (int64_t k = b; k < e; ++k) {
        const int64_t n = k % N_, place = k / N_;
        std::array<int64_t, D> cidx{};
        for (int64_t a = D - 1, r = place; a >= 0; --a) {
          cidx[a] = r % grid[a];
          r /= grid[a];
        }
        auto sig = weight_signature(n, cidx);
        if (sig != wsum_sig || k == b) {
          weight_chunk(sig, wsum.data());
          wsum_sig = std::move(sig);
        }
        const torch::Tensor sum = store_->read(kSum, n, cidx);
        const torch::Tensor sum_sq = std ? store_->read(kSumSq, n, cidx) : torch::Tensor();
        const torch::Tensor var_sum = std && have_var ? store_->read(kVarSum, n, cidx) : torch::Tensor();
        detail::FinishedBox box;
        box.acc = sum.data_ptr<float>();
        box.wsum = wsum.data();
        box.sq = std ? sum_sq.data_ptr<float>() : nullptr;
        box.var = var_sum.defined() ? var_sum.data_ptr<float>() : nullptr;
        box.mean = mean.data_ptr<float>();
        box.sd = std ? sd.data_ptr<float>() : nullptr;
        box.C = C_;
        box.n = chunk_numel;
        box.normalize = normalize;
        detail::finish_cpu(box);
        torch::Tensor m = mean, s = sd;
        for (int a = 0; a < D; ++a)  // padding cropped off (padded axes are one chunk)
          if (image_[a] != geom_.shape()[a]) {
            m = m.narrow(1 + a, before_[a], image_[a]);
            if (std) s = s.narrow(1 + a, before_[a], image_[a]);
          }
        std::vector<int64_t> chunk_index{n, 0};
        chunk_index.insert(chunk_index.end(), cidx.begin(), cidx.end());
        mean_arr.write_chunk(chunk_index, m.unsqueeze(0));
        if (std) std_arr->write_chunk(chunk_index, s.unsqueeze(0));
        if (!in_memory) continue;
        // The in-image part of the chunk into the returned tensors.
        torch::Tensor dst_m = mean_out[n], dst_s = std ? std_out[n] : torch::Tensor();
        for (int a = 0; a < D; ++a) {
          const int64_t lo = cidx[a] * acc_chunk_[a], len = std::min(acc_chunk_[a], image_[a] - lo);
          dst_m = dst_m.narrow(1 + a, lo, len);
          m = m.narrow(1 + a, 0, len);
          if (std) {
            dst_s = dst_s.narrow(1 + a, lo, len);
            s = s.narrow(1 + a, 0, len);
          }
        }
        dst_m.copy_(m);
        if (std) dst_s.copy_(s);
      }
    });
    return {mean_out, std_out};
  }

  /// @brief Windows and labels of x (N, C, *S) and y (N, *S) or (N, C', *S) whose labels are not all
  /// `missing_label` inside the border (in-memory tensors; as in the original).
  std::tuple<torch::Tensor, torch::Tensor> unstitch_and_clean_sparse_data_pair(const torch::Tensor& x,
                                                                               const torch::Tensor& y,
                                                                               double missing_label) const {
    Quilt<D> q(image_, std::vector<int64_t>(geom_.window().begin(), geom_.window().end()),
               std::vector<int64_t>(geom_.step().begin(), geom_.step().end()), geom_.blend(), opt_.pad);
    auto [xp, yp] = q.unstitch_data_pair(x, y, missing_label);
    torch::Tensor xk, yk, removed;
    if constexpr (D == 2) {
      std::tie(xk, yk, removed) = weed_sparse_classification_training_pairs_2D(xp, yp, missing_label, border_tensor());
    } else {
      std::tie(xk, yk, removed) = weed_sparse_classification_training_pairs_3D(xp, yp, missing_label, border_tensor());
    }
    return {xk, yk};
  }

  /// @brief Every patch index once, in an order that visits each accumulator chunk in few passes through the
  /// cache: per image, tiles of T x T windows across the inner axes (Y, X in 3D; X in 2D), and in each tile the
  /// windows row by row along the outer axis (forward in even tiles, backward in odd ones, so a tile starts where
  /// the chunks it shares with the previous one are still cached). T is the largest tile whose chunks (for `channels`;
  /// 0: the channels stitched so far, else 1) fit in 3/4 of cache_bytes; with a cache that holds a whole row of windows
  /// this is index order. Stitching in another order changes the rounding of the sums, not their value: resume in the
  /// same order (filter it by is_stitched) to get the bytes of an uninterrupted run.
  std::vector<int64_t> stitch_order(int64_t channels = 0) const {
    const int64_t C = channels > 0 ? channels : std::max<int64_t>(C_, 1);
    const auto times = geom_.times();
    const auto grid = acc_chunk_grid();
    int64_t chunk_elems = 1;
    for (auto c : acc_chunk_) chunk_elems *= c;
    const int64_t arrays_bytes = chunk_elems * 4 * C * (1 + (opt_.track_std ? 1 : 0) + (store_->has(kVarSum) ? 1 : 0));
    auto touched = [&](int a, int64_t windows) {  // chunks along axis a that `windows` consecutive windows touch
      const int64_t span = (windows - 1) * geom_.step()[a] + geom_.window()[a];
      return std::min(grid[a], (span + acc_chunk_[a] - 1) / acc_chunk_[a] + 1);
    };
    auto bytes = [&](int64_t T) {
      int64_t b = arrays_bytes * touched(0, 1);
      for (int a = 1; a < D; ++a) b *= touched(a, std::min(T, times[a]));
      return b;
    };
    int64_t tmax = 1;
    for (int a = 1; a < D; ++a) tmax = std::max(tmax, times[a]);
    int64_t T = 1;
    while (T < tmax && bytes(T + 1) <= opt_.cache_bytes * 3 / 4) ++T;
    std::array<int64_t, D> tiles{};
    for (int a = 1; a < D; ++a) tiles[a] = (times[a] + T - 1) / T;
    std::vector<int64_t> order;
    order.reserve(static_cast<size_t>(patch_count()));
    const int64_t P = geom_.per_image();
    const int64_t tiles_total = D == 3 ? tiles[1] * tiles[D - 1] : tiles[1];
    for (int64_t n = 0; n < N_; ++n)
      for (int64_t t = 0; t < tiles_total; ++t) {
        const int64_t t1 = D == 3 ? t / tiles[D - 1] : t, t2 = D == 3 ? t % tiles[D - 1] : 0;
        for (int64_t j0 = 0; j0 < times[0]; ++j0) {
          // Every other tile runs back along the outer axis: the chunks it shares with the tile before are the
          // ones that tile used last, still in the cache.
          const int64_t k0 = t % 2 ? times[0] - 1 - j0 : j0;
          for (int64_t k1 = t1 * T; k1 < std::min(times[1], (t1 + 1) * T); ++k1) {
            if (D == 2) {
              order.push_back(n * P + k0 * times[1] + k1);
              continue;
            }
            for (int64_t k2 = t2 * T; k2 < std::min(times[D - 1], (t2 + 1) * T); ++k2)
              order.push_back(n * P + (k0 * times[1] + k1) * times[D - 1] + k2);
          }
        }
      }
    return order;
  }

  /// @brief Whether patch `index` is in the accumulators (stitched in this run or a resumed one).
  bool is_stitched(int64_t index) const {
    check_index(index, "is_stitched");
    return stitched_[index] != 0;
  }
  /// @brief The patch indices not stitched yet, in order: what a resumed run still has to do.
  std::vector<int64_t> missing_indices() const {
    std::vector<int64_t> out;
    for (int64_t i = 0; i < patch_count(); ++i)
      if (!stitched_[i]) out.push_back(i);
    return out;
  }

  /// @brief Makes everything stitched so far durable, atomically (see the file comment).
  void checkpoint() {
    if (!has_arrays() || (since_checkpoint_ == 0 && !store_->changed())) return;
    detail::Renames renames;  // (target, staged): those staged now first, then the chunks spilled before
    size_t fresh = store_->stage_changes(renames);
    try {
      const auto staged = detail::CheckpointJournal::staged_name("stitched", store_->next_seq());
      detail::write_new_file(journal_->path(staged), stitched_.data(), stitched_.size(), false);
      renames.insert(renames.begin() + static_cast<std::ptrdiff_t>(fresh), {"stitched", staged});
      ++fresh;
    } catch (...) {
      for (size_t k = 0; k < fresh; ++k) ::unlink(journal_->path(renames[k].second).c_str());
      throw;
    }
    journal_->commit(renames, fresh);
    store_->committed();
    since_checkpoint_ = 0;
    last_checkpoint_ = std::chrono::steady_clock::now();
    ++checkpoints_;
  }

  /// @brief Checkpoints taken by this object.
  int64_t checkpoints() const { return checkpoints_; }
  /// @brief Changed chunks written to staged files to make room in the cache.
  int64_t spills() const { return store_->spills(); }
  /// @brief Chunks read back into the cache from a spill or a checkpoint (after an eviction or on resume).
  int64_t reloads() const { return store_->reloads(); }
  /// @brief Bytes of accumulator chunks now in memory.
  int64_t cached_bytes() const { return store_->cached_bytes(); }

 private:
  static constexpr int64_t kChunkTarget = int64_t(256) << 10;
  static constexpr uint8_t kMaxAdds = 255;  // the stitched list counts additions per patch in a byte
  enum ArrayId { kSum = 0, kSumSq = 1, kVarSum = 2 };
  static const std::array<std::string, 3>& array_names() {
    static const std::array<std::string, 3> n{"sum", "sum_sq", "var_sum"};
    return n;
  }
  static const char* name() { return D == 2 ? "LargeNCYXQuilt" : "LargeNCZYXQuilt"; }

  std::string acc_path(const std::string& rel = "") const {
    return rel.empty() ? prefix_ + "_acc.zarr" : detail::join_path(prefix_ + "_acc.zarr", rel);
  }
  bool has_arrays() const { return store_->has(kSum); }

  nlohmann::json params() const {
    auto v = [](const std::array<int64_t, D>& a) { return std::vector<int64_t>(a.begin(), a.end()); };
    nlohmann::json p = {{"N", N_},
                        {"shape", v(image_)},
                        {"window", v(geom_.window())},
                        {"step", v(geom_.step())},
                        {"border", v(geom_.border())},
                        {"border_weight", geom_.border_weight()},
                        {"chunks", v(acc_chunk_)},
                        {"track_std", opt_.track_std},
                        {"weights", "derived"}};  // format 2: the weight sums follow from the stitched list, not stored
    if (geom_.blend().mode() != Blend::Mode::Border) p["blend"] = geom_.blend().describe();
    if (image_ != geom_.shape())
      p["pad"] = c10::str(opt_.pad.name(), "(", opt_.pad.value(), ") to ", c10::IntArrayRef(geom_.shape()));
    return p;
  }

  void open_or_create() {
    const std::string acc = acc_path();
    if (zarr::node_type(acc) == zarr::NodeType::None) {
      zarr::Group::create(acc, {{"qlty_large_quilt", params()}});
      return;
    }
    auto g = zarr::Group::open(acc);
    const auto attrs = g.attributes();
    const auto it = attrs.find("qlty_large_quilt");
    if (it == attrs.end() || *it != params())
      throw Error("checkpoint", acc + ": holds a run with other parameters (" +
                                    (it == attrs.end() ? std::string("none") : detail::brief(*it)) + "), not " +
                                    params().dump() + "; use another prefix or remove it");
    recover();
    for (int k = 0; k < 3; ++k)
      if (g.contains(array_names()[k]) == zarr::NodeType::Array) store_->attach(k, g.open_array(array_names()[k]));
    if (has_arrays()) C_ = store_->channels();
    if (auto s = detail::read_file(acc_path("stitched"), 1ull << 40, "stitched list")) {
      if (static_cast<int64_t>(s->size()) != patch_count())
        throw Error("checkpoint", acc_path("stitched") + ": lists " + std::to_string(s->size()) +
                                      " patches, expected " + std::to_string(patch_count()));
      for (size_t i = 0; i < s->size(); ++i) stitched_[i] = (*s)[i];  // times each patch was added
    }
  }

  /// Finishes or discards what a killed process left: the journal's last checkpoint, staged and temporary files
  /// in the accumulators, and the temporary files of dead processes in the outputs.
  void recover() {
    journal_->recover();
    for (const char* out : {"_mean.zarr", "_std.zarr"})
      if (detail::is_directory(prefix_ + out)) detail::remove_stale_temps(prefix_ + out);
  }

  void create_arrays(int64_t C) {
    TORCH_CHECK_VALUE(C >= 1, name(), ".stitch: patch must have at least one channel");
    C_ = C;
    auto g = zarr::Group::open(acc_path());
    std::vector<int64_t> shape{N_, C}, chunks{1, C};
    for (int a = 0; a < D; ++a) {
      shape.push_back(geom_.shape()[a]);
      chunks.push_back(acc_chunk_[a]);
    }
    for (int k = 0; k < 3; ++k) {  // the weights are derived (weight_chunk), not stored
      if (!opt_.track_std && (k == kSumSq || k == kVarSum)) continue;
      zarr::ArrayOptions o(shape, chunks, zarr::DataType::Float32);
      o.codecs = {};  // accumulators are noisy floats: compression costs more than it saves
      o.overwrite = true;
      store_->attach(k, g.create_array(array_names()[k], o));
    }
  }

  /// Adds a checked patch p (C, *W) float32, contiguous (and v of its shape) at window `index` into the chunks it
  /// meets (kernels/accumulate.hpp): sum += w p, sum_sq += (p p) w, var_sum += w var, the float operations of the
  /// in-memory quilt's stitch. Weight sums are not stored: weight_chunk derives them.
  void add(const torch::Tensor& p, int64_t index, const std::optional<torch::Tensor>& v) {
    const auto o = origin(index);
    detail::WindowPart part;
    part.data = p.data_ptr<float>();
    part.var = v ? v->data_ptr<float>() : nullptr;
    part.extent = window3();
    part.sy = part.extent[2];
    part.sz = part.extent[1] * part.sy;
    part.sc = part.extent[0] * part.sz;
    for (int a = 0; a < D; ++a) part.origin[3 - D + a] = part.start[3 - D + a] = o[1 + a];
    std::vector<detail::AccumulatorBox> boxes;
    for_chunks(
        o, [&](const std::array<int64_t, D>& cidx, const std::array<int64_t, D>& lo, const std::array<int64_t, D>& hi) {
          // the part of the chunk the window meets, inside the chunk's buffers
          auto box = detail::AccumulatorBox::contiguous(chunk_origin(cidx), acc_chunk3());
          int64_t at = 0;
          for (int a = 0; a < D; ++a) {
            const int b = 3 - D + a;
            at += (lo[a] - box.origin[b]) * (b == 0 ? box.sz : b == 1 ? box.sy : 1);
            box.origin[b] = lo[a];
            box.extent[b] = hi[a] - lo[a];
          }
          box.acc = store_->write(kSum, o[0], cidx) + at;
          box.sq = opt_.track_std ? store_->write(kSumSq, o[0], cidx) + at : nullptr;
          box.var = v ? store_->write(kVarSum, o[0], cidx) + at : nullptr;
          boxes.push_back(box);
        });
    detail::accumulate_cpu(boxes, {part}, C_, *weights_);
    ++stitched_[index];
    ++since_checkpoint_;
    maybe_checkpoint();
  }

  /// What makes the weight sums of chunk `cidx` of image n: each window that meets it (in index order) as its start
  /// relative to the chunk's first voxel and the times it was stitched. Chunks with equal signatures have equal
  /// weight sums (inner chunks of images stitched alike, when chunks are whole steps long).
  std::vector<int64_t> weight_signature(int64_t n, const std::array<int64_t, D>& cidx) const {
    std::vector<int64_t> sig;
    for_windows_meeting(cidx, [&](int64_t window) {
      const auto o = origin(window);  // image 0: the starts only
      for (int a = 0; a < D; ++a) sig.push_back(o[1 + a] - cidx[a] * acc_chunk_[a]);
      sig.push_back(stitched_[n * geom_.per_image() + window]);
    });
    return sig;
  }

  /// The weight sums of a chunk with weight signature `sig` into `out` (chunk shape, float32): each window adds its
  /// weights over the overlap, once per time it was stitched, in index order (kernels/accumulate.hpp), so a run in
  /// index order gives the bytes of the in-memory quilt's weight sum.
  void weight_chunk(const std::vector<int64_t>& sig, float* out) const {
    auto box = detail::AccumulatorBox::contiguous({0, 0, 0}, acc_chunk3());  // coordinates relative to the chunk
    std::fill(out, out + box.sz * box.extent[0], 0.0f);
    box.wsum = out;
    std::vector<detail::WindowPart> parts;
    for (size_t k = 0; k < sig.size(); k += D + 1) {
      detail::WindowPart w;
      for (int a = 0; a < D; ++a) w.start[3 - D + a] = sig[k + a];
      w.origin = w.start;
      w.extent = grid_->window;
      parts.insert(parts.end(), static_cast<size_t>(sig[k + D]), w);
    }
    detail::accumulate_cpu({box}, parts, 0, *weights_);
  }

  /// Calls f(window index within an image) for each window that meets chunk `cidx`, in index order.
  template <typename F>
  void for_windows_meeting(const std::array<int64_t, D>& cidx, F&& f) const {
    std::array<int64_t, 3> first{0, 0, 0}, last{0, 0, 0}, times{1, 1, 1};
    for (int a = 0; a < D; ++a) {  // the windows along each axis that meet the chunk (starts are nondecreasing)
      const int b = 3 - D + a;
      const int64_t lo = cidx[a] * acc_chunk_[a], hi = std::min(lo + acc_chunk_[a], geom_.shape()[a]);
      int64_t first_a = 0;
      while (first_a < geom_.times()[a] && geom_.start(a, first_a) + geom_.window()[a] <= lo) ++first_a;
      int64_t last_a = first_a - 1;
      while (last_a + 1 < geom_.times()[a] && geom_.start(a, last_a + 1) < hi) ++last_a;
      first[b] = first_a;
      last[b] = last_a;
      times[b] = geom_.times()[a];
    }
    for (int64_t k0 = first[0]; k0 <= last[0]; ++k0)
      for (int64_t k1 = first[1]; k1 <= last[1]; ++k1)
        for (int64_t k2 = first[2]; k2 <= last[2]; ++k2) f((k0 * times[1] + k1) * times[2] + k2);
  }

  /// The window and the accumulator chunks in three dimensions (2D: a leading 1), and a chunk's first voxel.
  std::array<int64_t, 3> window3() const { return grid_->window; }
  std::array<int64_t, 3> acc_chunk3() const {
    std::array<int64_t, 3> c{1, 1, 1};
    for (int a = 0; a < D; ++a) c[3 - D + a] = acc_chunk_[a];
    return c;
  }
  std::array<int64_t, 3> chunk_origin(const std::array<int64_t, D>& cidx) const {
    std::array<int64_t, 3> o{0, 0, 0};
    for (int a = 0; a < D; ++a) o[3 - D + a] = cidx[a] * acc_chunk_[a];
    return o;
  }

  void check_index(int64_t index, const char* who) const {
    TORCH_CHECK_INDEX(index >= 0 && index < patch_count(), name(), ".", who, ": index must be in [0, ", patch_count(),
                      "), got ", index);
  }

  torch::Tensor squeeze_patch(const torch::Tensor& t, const char* what) const {
    torch::Tensor p = t;
    if (p.dim() == D + 2) {
      TORCH_CHECK_VALUE(p.size(0) == 1, name(), ".stitch: ", what, " with a leading axis must have size 1 there, got ",
                        p.sizes());
      p = p[0];
    }
    bool ok = p.dim() == D + 1;
    for (int a = 0; ok && a < D; ++a) ok = p.size(1 + a) == geom_.window()[a];
    TORCH_CHECK_VALUE(ok, name(), ".stitch: ", what, " must have shape (C, ",
                      c10::IntArrayRef(geom_.window().data(), D), ") or (1, C, ...), got ", t.sizes());
    TORCH_CHECK_TYPE(p.is_floating_point(), name(), ".stitch: ", what, " must be floating point, got ",
                     p.scalar_type());
    return p.to(torch::kCPU, torch::kFloat32).contiguous();
  }

  /// Window `index` as (C, *W), read through `read` (boxes of the images (N, C, *S)), padding included.
  template <typename Read>
  torch::Tensor window_of(const Read& read, int64_t C, int64_t index) const {
    const auto o = origin(index);
    std::vector<int64_t> off{o[0], 0}, ext{1, C};
    for (int a = 0; a < D; ++a) {
      off.push_back(o[1 + a]);
      ext.push_back(geom_.window()[a]);
    }
    if (image_ == geom_.shape()) return read(off, ext)[0];
    return opt_.pad.read_box(read, std::vector<int64_t>(image_.begin(), image_.end()),
                             std::vector<int64_t>(before_.begin(), before_.end()), off, ext)[0];
  }

  /// (image, start per axis) of window `index`.
  std::array<int64_t, D + 1> origin(int64_t index) const {
    std::array<int64_t, D + 1> o{};
    const int64_t P = geom_.per_image();
    o[0] = index / P;
    int64_t r = index % P;
    for (int a = D - 1; a >= 0; --a) {
      o[1 + a] = geom_.start(a, r % geom_.times()[a]);
      r /= geom_.times()[a];
    }
    return o;
  }

  std::array<int64_t, D> acc_chunk_grid() const {
    std::array<int64_t, D> g{};
    for (int a = 0; a < D; ++a) g[a] = (geom_.shape()[a] + acc_chunk_[a] - 1) / acc_chunk_[a];
    return g;
  }

  /// Calls f(chunk index, lo, hi) for each chunk the window at `o` touches, [lo, hi) the overlap in the image.
  template <typename F>
  void for_chunks(const std::array<int64_t, D + 1>& o, F&& f) const {
    std::array<int64_t, D> first{}, last{}, c{};
    for (int a = 0; a < D; ++a) {
      first[a] = o[1 + a] / acc_chunk_[a];
      last[a] = (o[1 + a] + geom_.window()[a] - 1) / acc_chunk_[a];
    }
    c = first;
    while (true) {
      std::array<int64_t, D> lo{}, hi{};
      for (int a = 0; a < D; ++a) {
        lo[a] = std::max(o[1 + a], c[a] * acc_chunk_[a]);
        hi[a] = std::min(o[1 + a] + geom_.window()[a], (c[a] + 1) * acc_chunk_[a]);
      }
      f(c, lo, hi);
      int a = D - 1;
      for (; a >= 0; --a) {
        if (++c[a] <= last[a]) break;
        c[a] = first[a];
      }
      if (a < 0) break;
    }
  }

  void maybe_checkpoint() {
    const bool by_count = opt_.checkpoint_every > 0 && since_checkpoint_ >= opt_.checkpoint_every;
    const bool by_time = opt_.checkpoint_seconds > 0 &&
                         std::chrono::duration<double>(std::chrono::steady_clock::now() - last_checkpoint_).count() >=
                             opt_.checkpoint_seconds;
    if (by_count || by_time) checkpoint();
    store_->evict();
  }

  std::string prefix_;
  mutable std::string checked_input_;  // the last input array found apart from the quilt's folders
  mutable std::mutex checked_mutex_;
  std::unique_ptr<detail::LockFile> lock_;
  int64_t N_;
  std::array<int64_t, D> image_{}, before_{};  // the images' size and the padding before them (geom_ is padded)
  Geometry<D> geom_;
  LargeQuiltOptions opt_;
  std::shared_ptr<const detail::Grid3> grid_;                 // geom_ in three dimensions
  std::shared_ptr<const detail::RowWeights<float>> weights_;  // its window's weights (on the heap: moves keep them)
  std::array<int64_t, D> acc_chunk_{};  // the accumulators' chunks on disk (not patches: see N_chunks)
  int64_t C_ = 0;
  std::optional<detail::CheckpointJournal> journal_;
  std::optional<detail::ChunkStore<D, 3>> store_;  // sum, sum_sq, var_sum
  std::vector<uint8_t> stitched_;
  int64_t since_checkpoint_ = 0, checkpoints_ = 0;
  int64_t next_ = 0;
  std::chrono::steady_clock::time_point last_checkpoint_;
};

/// @brief Disk-cached quilt of 2D images: `LargeNCYXQuilt(prefix, N, Y, X, window, step, border, border_weight)`.
class LargeNCYXQuilt : public LargeQuilt<2> {
 public:
  LargeNCYXQuilt(std::string prefix, int64_t N, int64_t Y, int64_t X, const PerAxis& window, const PerAxis& step,
                 const PerAxis& border = 0, double border_weight = 0.1, LargeQuiltOptions options = {})
      : LargeQuilt<2>(std::move(prefix), N, {Y, X}, window, step, border, border_weight, options) {}
  LargeNCYXQuilt(std::string prefix, int64_t N, int64_t Y, int64_t X, const PerAxis& window, const PerAxis& step,
                 const Blend& blend, LargeQuiltOptions options = {})
      : LargeQuilt<2>(std::move(prefix), N, {Y, X}, window, step, blend, options) {}
};

/// @brief Disk-cached quilt of 3D volumes: `LargeNCZYXQuilt(prefix, N, Z, Y, X, window, step, border, ...)`.
class LargeNCZYXQuilt : public LargeQuilt<3> {
 public:
  LargeNCZYXQuilt(std::string prefix, int64_t N, int64_t Z, int64_t Y, int64_t X, const PerAxis& window,
                  const PerAxis& step, const PerAxis& border = 0, double border_weight = 0.1,
                  LargeQuiltOptions options = {})
      : LargeQuilt<3>(std::move(prefix), N, {Z, Y, X}, window, step, border, border_weight, options) {}
  LargeNCZYXQuilt(std::string prefix, int64_t N, int64_t Z, int64_t Y, int64_t X, const PerAxis& window,
                  const PerAxis& step, const Blend& blend, LargeQuiltOptions options = {})
      : LargeQuilt<3>(std::move(prefix), N, {Z, Y, X}, window, step, blend, options) {}
};

}  // namespace qlty
