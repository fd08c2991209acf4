#pragma once
// IWYU pragma: private, include <qlty/blockwise.hpp>
// The block executor of a blockwise run: for each block a schedule hands out, read the input halo, run the model
// on the block's windows in canonical batches, blend them in global window order, write the block, mark it done.
//
// Windows of one row (along the slab axis A) that meet two consecutive blocks of a column are computed once where
// one worker computes both blocks: the worker carries their predictions to the next block in memory. Where the
// next block belongs to another worker (another rank, another part), that worker computes those rows first and
// leaves their parts inside this block in a carry file; this worker takes them from there when it reaches them, or
// computes them itself when the file is not (yet) there. Batches are always formed from one window row of a
// column, in window order, so every path feeds the model the same batches and the bytes do not depend on who
// computed what.

#include <qlty/blockwise/output.hpp>
#include <qlty/blockwise/plan.hpp>
#include <qlty/blockwise_types.hpp>
#include <qlty/error.hpp>
#include <qlty/kernels.hpp>
#include <qlty/kernels/accumulate.hpp>
#include <qlty/kernels/window_weights.hpp>
#include <qlty/support/torch_compat.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <functional>
#include <future>
#include <optional>
#include <string>
#include <vector>

namespace qlty::detail {

/// Hands out the blocks (run-order indices) one worker computes.
class BlockSchedule {
 public:
  virtual ~BlockSchedule() = default;
  /// The block to compute after `after` (-1 at the start), or -1 when none is left. The executor asks when it
  /// reaches the rows `after` shares with its successor (or after its last row), so a schedule that hands out
  /// that successor lets the worker carry those rows over in memory.
  virtual int64_t next(int64_t after) = 0;
};

/// A fixed list of blocks: one process, or one part of a split run.
class ListSchedule : public BlockSchedule {
 public:
  explicit ListSchedule(std::vector<int64_t> blocks) : blocks_(std::move(blocks)) {}
  int64_t next(int64_t) override { return pos_ < blocks_.size() ? blocks_[pos_++] : -1; }
  const std::vector<int64_t>& blocks() const { return blocks_; }

 private:
  std::vector<int64_t> blocks_;
  size_t pos_ = 0;
};

/// The blocks of [first, last) in run order that are not done, at most `max_blocks` (-1: all).
inline std::vector<int64_t> pending_blocks(const BlockwiseOutput& out, int64_t first, int64_t last,
                                           int64_t max_blocks) {
  std::vector<int64_t> v;
  for (int64_t i = first; i < last && (max_blocks < 0 || static_cast<int64_t>(v.size()) < max_blocks); ++i)
    if (!out.is_done(i)) v.push_back(i);
  return v;
}

/// Model evaluations of a list of blocks run in order, with rows carried between consecutive blocks of a column.
inline int64_t planned_windows(const BlockPlan& plan, const std::vector<int64_t>& blocks) {
  int64_t w = 0;
  for (size_t k = 0; k < blocks.size(); ++k)
    w += plan.windows_to_compute(blocks[k], k > 0 && plan.predecessor(blocks[k]) == blocks[k - 1]);
  return w;
}

/// The box [off, off + ext) of the padded input (plan.grid.shape; the input's rank): what lies outside the input
/// comes from `pad`. Padded boxes are float32, padded after the conversion (as MONAI does): a pad value of 0.5
/// or -1 stays what it is next to a uint8 input.
inline torch::Tensor read_padded(const BlockInput& input, const BlockPlan& plan, const Pad& pad,
                                 const std::vector<int64_t>& off, const std::vector<int64_t>& ext) {
  if (!plan.padded()) return input.read(off, ext);
  const auto read = [&input](const std::vector<int64_t>& o, const std::vector<int64_t>& e) {
    return input.read(o, e).to(torch::kFloat);
  };
  return pad.read_box(read, plan.spatial(plan.image), plan.spatial(plan.before), off, ext);
}

/// Runs the model as a blockwise run does: precision (autocast on CUDA, cast elsewhere), slicewise (depth-1
/// windows as 2D), float32 predictions checked against (B, Cout, *window) (Cout < 0: any channel count).
class ModelRunner {
 public:
  ModelRunner(const BlockModel& model, const BlockwiseOptions& o) : model_(model), o_(o) {}

  /// The model on windows (B, C, *W) float32; `what` describes them for errors.
  torch::Tensor operator()(const torch::Tensor& windows, int64_t Cout, const std::string& where,
                           const std::string& what) const {
    auto x = o_.slicewise ? windows.squeeze(2) : windows;
    const bool autocast = x.is_cuda() && o_.precision != torch::kFloat;
    if (!autocast && o_.precision != torch::kFloat) x = x.to(o_.precision);
    torch::Tensor y;
    try {
      AutocastGuard guard(autocast, o_.precision);
      y = model_(x);
    } catch (const std::exception& e) {
      // the model's own words: no LibTorch backtrace, no second tag
      const auto* c10e = dynamic_cast<const c10::Error*>(&e);
      const auto* qe = dynamic_cast<const Error*>(&e);
      const std::string m = c10e ? c10e->what_without_backtrace() : qe ? qe->message() : e.what();
      const bool oom = m.find("out of memory") != std::string::npos || dynamic_cast<const std::bad_alloc*>(&e);
      throw Error("model", where + ": the model failed on " + what + " (shape " + c10::str(x.sizes()) + ", " +
                               c10::toString(x.scalar_type()) + ")" +
                               (oom ? " (out of memory: try a smaller batch size)" : "") + ": " + m);
    }
    std::vector<int64_t> want = {x.size(0), Cout};
    for (int64_t d = 2; d < x.dim(); ++d) want.push_back(x.size(d));
    bool ok = y.defined() && y.is_floating_point() && y.dim() == x.dim();
    for (int64_t d = 0; ok && d < y.dim(); ++d) ok = (d == 1 && Cout < 0) || y.size(d) == want[d];
    if (!ok) {
      std::string w = "[" + std::to_string(want[0]) + ", " + (Cout < 0 ? std::string("C'") : std::to_string(Cout));
      for (size_t d = 2; d < want.size(); ++d) w += ", " + std::to_string(want[d]);
      throw Error("model",
                  where + ": the model returned " +
                      (y.defined() ? c10::str("shape ", y.sizes(), " ", y.scalar_type()) : std::string("no tensor")) +
                      " for " + what + " of shape " + c10::str(x.sizes()) + "; expected " + w + "], floating point" +
                      (o_.slicewise ? " (slicewise: the model sees 2D windows)" : ""));
    }
    y = y.to(torch::kFloat);
    return o_.slicewise ? y.unsqueeze(2) : y;
  }

 private:
  // Autocast on CUDA for the model's call, restored after.
  class AutocastGuard {
   public:
    AutocastGuard(bool on, torch::ScalarType dtype) : on_(on) {
      if (!on_) return;
      was_ = autocast_cuda::enabled();
      old_ = autocast_cuda::dtype();
      autocast_cuda::set(true, dtype);
      at::autocast::increment_nesting();
    }
    ~AutocastGuard() {
      if (!on_) return;
      if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
      autocast_cuda::set(was_, old_);
    }
    AutocastGuard(const AutocastGuard&) = delete;
    AutocastGuard& operator=(const AutocastGuard&) = delete;

   private:
    bool on_, was_ = false;
    torch::ScalarType old_ = torch::kHalf;
  };

  const BlockModel& model_;
  const BlockwiseOptions& o_;
};

/// The channel count of `model`, from one window of image 0.
inline int64_t probe_channels(const BlockModel& model, const BlockInput& input, const BlockPlan& plan,
                              const BlockwiseOptions& o, const std::string& where) {
  torch::NoGradGuard no_grad;
  const auto& shape = input.shape();
  std::vector<int64_t> off(shape.size(), 0), ext(shape.begin(), shape.end());
  ext[0] = 1;
  for (int a = 0; a < plan.spatial_dims; ++a) ext[2 + a] = plan.grid.window[3 - plan.spatial_dims + a];
  auto w = read_padded(input, plan, o.pad, off, ext).to(o.device, torch::kFloat).contiguous();
  return ModelRunner(model, o)(w, -1, where, "the first window").size(1);
}

/// Computes blocks: see the file's notes.
class BlockExecutor {
 public:
  /// `progress(windows, block_done)` is called after every batch (with its window count) and every block.
  BlockExecutor(const BlockModel& model, const BlockInput& input, const BlockPlan& plan, BlockwiseOutput& out,
                const BlockwiseOptions& o, std::function<void(int64_t windows, bool block_done)> progress = {})
      : model_(model),
        input_(input),
        plan_(plan),
        out_(out),
        o_(o),
        progress_(std::move(progress)),
        blend_device_(o.device),
        row_weights_(plan.grid, true),
        runner_(model, o) {
    const Grid3& g = plan_.grid;
    weight_cpu_ = window_weights(g, true, torch::kFloat).view({g.window[0], g.window[1], g.window[2]});
    weight_ = weight_cpu_.to(blend_device_);
    if (o.tta_flip) {  // every subset of the flipped axes, the identity first
      std::vector<int64_t> axes = o.tta_axes;
      if (axes.empty())
        for (int64_t a = o.slicewise ? 1 : 0; a < plan.spatial_dims; ++a) axes.push_back(a);  // slices: Y and X
      std::sort(axes.begin(), axes.end());
      axes.erase(std::unique(axes.begin(), axes.end()), axes.end());
      for (size_t mask = 0; mask < (size_t(1) << axes.size()); ++mask) {
        std::vector<int64_t> dims;  // tensor dims in (B, C, *W) of the input's rank
        for (size_t k = 0; k < axes.size(); ++k)
          if (mask & (size_t(1) << k)) dims.push_back(2 + axes[k]);
        flips_.push_back(dims);
      }
    }
  }

  /// Computes every block the schedule hands out.
  void run(BlockSchedule& schedule) {
    torch::NoGradGuard no_grad;
    int64_t i = schedule.next(-1);
    bool carried_in = false;
    std::future<torch::Tensor> halo = read_halo_async(i, carried_in);
    while (i >= 0) {
      int64_t next = -1;
      compute_block(i, carried_in, halo, schedule, next);
      carried_in = next >= 0 && plan_.predecessor(next) == i;
      i = next;
    }
  }

  int64_t blocks_computed() const { return blocks_; }
  int64_t windows_computed() const { return windows_; }
  int64_t windows_received() const { return received_; }
  double model_seconds() const { return model_seconds_; }

 private:
  // The input box of block i's windows from row `first` on: (offset, shape) in the input's rank.
  std::pair<std::vector<int64_t>, std::vector<int64_t>> input_box(int64_t i, int64_t first) const {
    const Grid3& g = plan_.grid;
    const auto n = plan_.at(i).first;
    const WindowRange w = plan_.windows(i);
    const auto &kf = w.first, &kl = w.last;
    std::vector<int64_t> off = {n, 0}, ext = {1, plan_.in_channels};
    for (int a = 3 - plan_.spatial_dims; a < 3; ++a) {
      const int64_t k0 = a == plan_.slab_axis ? first : kf[a], k1 = kl[a];
      const int64_t h0 = g.start(a, std::min(k0, k1)), h1 = g.start(a, k1) + g.window[a];
      off.push_back(h0);
      ext.push_back(h1 - h0);
    }
    return {off, ext};
  }

  std::future<torch::Tensor> read_halo_async(int64_t i, bool carried_in) const {
    auto read = [this, i, carried_in]() -> torch::Tensor {
      if (i < 0) return {};
      const int64_t first = plan_.first_computed_row(i, carried_in);
      if (first > plan_.rows(i).second) return {};  // every window carried
      auto [off, ext] = input_box(i, first);
      auto x = read_padded(input_, plan_, o_.pad, off, ext);
      return plan_.spatial_dims == 2 ? x.unsqueeze(2) : x;
    };
    return std::async(o_.prefetch && i >= 0 ? std::launch::async : std::launch::deferred, read);
  }

  // Adds `pending` (predictions in window order) into the block's accumulators (kernels/accumulate.hpp): one
  // native pass on the CPU, three torch ops per window elsewhere.
  void blend(std::vector<PredictionPart>& pending, torch::Tensor& acc, torch::Tensor& wsum, torch::Tensor& sq,
             const std::array<int64_t, 3>& b0, const std::array<int64_t, 3>& b1) const {
    const int64_t C = plan_.out_channels;
    if (blend_device_.is_cpu()) {
      std::vector<WindowPart> parts;
      for (const auto& c : pending) {
        const auto& p = c.pred;
        WindowPart w;
        w.data = p.data_ptr<float>();
        w.second = plan_.moments ? p.data_ptr<float>() + C * p.stride(0) : nullptr;
        w.sc = p.stride(0);
        w.sz = p.stride(1);
        w.sy = p.stride(2);
        w.sx = p.stride(3);
        w.origin = c.origin;
        w.extent = {p.size(1), p.size(2), p.size(3)};
        w.start = c.start;
        parts.push_back(w);
      }
      std::array<int64_t, 3> bext{};
      for (int a = 0; a < 3; ++a) bext[a] = b1[a] - b0[a];
      auto box = AccumulatorBox::contiguous(b0, bext);
      box.acc = acc.data_ptr<float>();
      box.wsum = wsum.data_ptr<float>();
      box.sq = sq.defined() ? sq.data_ptr<float>() : nullptr;
      accumulate_cpu({box}, parts, C, row_weights_);
    } else {
      for (const auto& c : pending) {
        const auto p = c.pred.to(blend_device_);
        accumulate_box_torch(acc, wsum, sq, plan_.moments ? p.narrow(0, 0, C) : p,
                             plan_.moments ? p.narrow(0, C, C) : torch::Tensor(), weight_, c.origin, c.start, b0, b1);
      }
    }
    pending.clear();
  }

  // The windows of row `row` of block i, in global order.
  std::vector<std::array<int64_t, 3>> row_starts(int64_t i, int64_t row) const {
    const Grid3& g = plan_.grid;
    const int A = plan_.slab_axis, o1 = A == 0 ? 1 : 0, o2 = 2;  // the other axes (for 2D, Z has one window)
    const WindowRange w = plan_.windows(i);
    const auto &kf = w.first, &kl = w.last;
    std::vector<std::array<int64_t, 3>> starts;
    for (int64_t k1 = kf[o1]; k1 <= kl[o1]; ++k1)
      for (int64_t k2 = kf[o2]; k2 <= kl[o2]; ++k2) {
        std::array<int64_t, 3> s{};
        s[A] = g.start(A, row);
        s[o1] = g.start(o1, k1);
        s[o2] = g.start(o2, k2);
        starts.push_back(s);
      }
    return starts;
  }

  // The part of a window starting at s inside [b0, b1) along A (the other axes whole), pred undefined unless given.
  PredictionPart part_in(const std::array<int64_t, 3>& s, const std::array<int64_t, 3>& b0,
                         const std::array<int64_t, 3>& b1, const torch::Tensor& full = {}) const {
    const int A = plan_.slab_axis;
    std::array<int64_t, 3> origin = s;
    origin[A] = std::max(s[A], b0[A]);
    const int64_t len = std::min(s[A] + plan_.grid.window[A], b1[A]) - origin[A];
    if (full.defined()) return {s, origin, full.narrow(A + 1, origin[A] - s[A], len).clone()};
    std::vector<int64_t> shape = {plan_.pred_channels(), plan_.grid.window[0], plan_.grid.window[1],
                                  plan_.grid.window[2]};
    shape[A + 1] = len;
    return {s, origin, torch::empty(shape, torch::kFloat)};  // the shape of what a carry file holds
  }

  // The model on the windows at `starts` (one batch of one row), float32 (B, C', *W) in 3D form on the blend device.
  torch::Tensor predict(const torch::Tensor& halo, const std::array<int64_t, 3>& h0,
                        const std::vector<std::array<int64_t, 3>>& starts, size_t s0, size_t s1, int64_t row,
                        const std::string& where) {
    const int64_t B = static_cast<int64_t>(s1 - s0);
    auto origins = torch::empty({B, 4}, torch::kLong);
    auto* o = origins.data_ptr<int64_t>();
    for (int64_t j = 0; j < B; ++j) {
      o[4 * j] = 0;
      for (int a = 0; a < 3; ++a) o[4 * j + 1 + a] = starts[s0 + j][a] - h0[a];
    }
    auto windows = gather_windows(halo, origins, plan_.grid.window);
    if (plan_.spatial_dims == 2) windows = windows.squeeze(2);
    windows = windows.to(o_.device, torch::kFloat);
    const std::string what =
        "windows " + std::to_string(s0) + ".." + std::to_string(s1 - 1) + " of row " + std::to_string(row);
    const auto t0 = std::chrono::steady_clock::now();
    torch::Tensor pred;
    if (flips_.empty()) {
      pred = runner_(windows, plan_.out_channels, where, what);
    } else {  // the mean of the flipped predictions, flipped back (and their mean square for the std)
      torch::Tensor sum, sumsq;
      for (const auto& dims : flips_) {
        auto y = dims.empty() ? runner_(windows, plan_.out_channels, where, what)
                              : runner_(windows.flip(dims), plan_.out_channels, where, what + " (flipped)").flip(dims);
        sum = sum.defined() ? sum.add_(y) : y.clone();
        if (plan_.moments) sumsq = sumsq.defined() ? sumsq.addcmul_(y, y) : y * y;
      }
      const double n = static_cast<double>(flips_.size());
      pred = plan_.moments ? torch::cat({sum.div_(n), sumsq.div_(n)}, 1) : sum.div_(n);
    }
    model_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    pred = pred.to(blend_device_, torch::kFloat);
    return plan_.spatial_dims == 2 ? pred.unsqueeze(2) : pred;
  }

  // The block's accumulators (C', *block), (*block) and, with std, (C', *block) on the blend device: zeros.
  struct Accumulators {
    torch::Tensor acc, wsum, sq;
  };
  // Where accumulators do not fit on the device, they move to the CPU for the rest of the run.
  Accumulators allocate(const Box& block) {
    auto zeros = [&] {
      const auto fopts = torch::TensorOptions().dtype(torch::kFloat).device(blend_device_);
      Accumulators a;
      a.acc = torch::zeros(
          {plan_.out_channels, block.hi[0] - block.lo[0], block.hi[1] - block.lo[1], block.hi[2] - block.lo[2]}, fopts);
      a.wsum = torch::zeros({block.hi[0] - block.lo[0], block.hi[1] - block.lo[1], block.hi[2] - block.lo[2]}, fopts);
      a.sq = o_.write_std ? torch::zeros_like(a.acc) : torch::Tensor();
      return a;
    };
    try {
      return zeros();
    } catch (const c10::Error&) {
      if (blend_device_.is_cpu()) throw;
      blend_device_ = torch::kCPU;  // from now on: the accumulators do not fit on the device
      weight_ = weight_cpu_;
      for (auto& c : carried_) c.pred = c.pred.cpu();
      return zeros();
    }
  }

  // Parts of window predictions in row order along the slab axis (the rows the previous block passed on, or those
  // of a carry file), taken row by row.
  class RowQueue {
   public:
    RowQueue() = default;
    RowQueue(const std::vector<PredictionPart>& parts, int axis) : parts_(&parts), axis_(axis) {}
    // Calls f on each part of the row that starts at `row_start`, and drops them from the queue.
    template <typename F>
    void take(int64_t row_start, F&& f) {
      for (; parts_ && at_ < parts_->size() && (*parts_)[at_].start[axis_] == row_start; ++at_) f((*parts_)[at_]);
    }
    void skip(int64_t row_start) {
      take(row_start, [](const PredictionPart&) {});
    }

   private:
    const std::vector<PredictionPart>* parts_ = nullptr;
    int axis_ = 0;
    size_t at_ = 0;
  };

  // What a block passes on to the next block of its column when this worker computes that one too (`keep`): the
  // parts of its windows beyond the block along the slab axis.
  struct CarryOut {
    bool keep = false;
    int axis = 0;
    int64_t end = 0, window = 0;  // the block's end and the window along the slab axis
    std::vector<PredictionPart> parts;

    void add_carried(const PredictionPart& p) {  // a part this block itself was carried (it spans 3 blocks)
      if (keep && p.start[axis] + window > end) parts.push_back(p);
    }
    void add_computed(const std::array<int64_t, 3>& start, const torch::Tensor& pred) {
      if (!keep || start[axis] + window <= end) return;
      std::array<int64_t, 3> origin = start;
      origin[axis] = end;
      parts.push_back({start, origin, pred.narrow(axis + 1, end - start[axis], start[axis] + window - end).clone()});
    }
  };

  // What a block that starts a segment mid-column owes its predecessor when that block is not done: the parts,
  // inside the predecessor, of the rows they share, written to the predecessor's carry file once the last shared
  // row is computed.
  struct GiveBack {
    int64_t block = -1, last_row = -1;  // the predecessor and the last row it shares (-1: nothing to give)
    Box box;
    std::vector<PredictionPart> parts;
  };
  GiveBack give_back(int64_t i, bool carried_in) const {
    GiveBack g;
    const int64_t pred = plan_.predecessor(i);
    if (carried_in || pred < 0 || out_.is_done(pred)) return g;
    g.block = pred;
    g.last_row = plan_.rows(pred).second;
    g.box = plan_.box(pred);
    return g;
  }

  // The origin of block i's halo (what read_halo reads for rows from `first` on), in 3D form.
  std::array<int64_t, 3> halo_origin(int64_t i, int64_t first, int64_t last) const {
    std::array<int64_t, 3> h0{0, 0, 0};
    if (first > last) return h0;
    const auto box = input_box(i, first).first;
    for (int a = 3 - plan_.spatial_dims; a < 3; ++a) h0[a] = box[2 + a - (3 - plan_.spatial_dims)];
    return h0;
  }

  // The windows of row `row` of block i, computed by the model in batches and blended as they come; the parts
  // the next block or the predecessor needs are collected on the way.
  void compute_row(int64_t i, int64_t row, const torch::Tensor& halo, const std::array<int64_t, 3>& h0,
                   const std::string& where, Accumulators& a, const Box& block, CarryOut& carry_out, GiveBack& give) {
    std::vector<PredictionPart> pending;
    const auto starts = row_starts(i, row);
    for (size_t s0 = 0; s0 < starts.size(); s0 += static_cast<size_t>(o_.batch_size)) {
      const size_t s1 = std::min(starts.size(), s0 + static_cast<size_t>(o_.batch_size));
      auto batch = predict(halo, h0, starts, s0, s1, row, where);
      for (size_t j = s0; j < s1; ++j) {
        const auto& s = starts[j];
        auto window = batch[static_cast<int64_t>(j - s0)];
        pending.push_back({s, s, window});
        carry_out.add_computed(s, window);
        if (row <= give.last_row) give.parts.push_back(part_in(s, give.box.lo, give.box.hi, window));
      }
      blend(pending, a.acc, a.wsum, a.sq, block.lo, block.hi);
      windows_ += static_cast<int64_t>(s1 - s0);
      if (progress_) progress_(static_cast<int64_t>(s1 - s0), false);
    }
    if (row == give.last_row) {
      out_.write_carry(give.block, give.parts);
      give.parts.clear();
    }
  }

  // Block i, row by row along the slab axis. A row's windows come from one of three sources: carried in memory
  // from the previous block of the column (rows before `first`), read from the carry file that the worker of the
  // next block left (rows shared with it, when another worker computes that block), or computed. Which worker
  // computes the next block is decided at the first shared row (schedule.next), and then the halo of the block
  // this worker computes next is read ahead.
  void compute_block(int64_t i, bool carried_in, std::future<torch::Tensor>& halo_future, BlockSchedule& schedule,
                     int64_t& next) {
    const Grid3& g = plan_.grid;
    const int A = plan_.slab_axis;
    const Box block = plan_.box(i);
    const std::string where = out_.path() + ": " + describe_block(plan_, i);
    torch::Tensor halo = halo_future.get();
    const int64_t first = plan_.first_computed_row(i, carried_in);
    const auto [r0, r1] = plan_.rows(i);
    const auto h0 = halo_origin(i, first, r1);
    Accumulators a = allocate(block);
    GiveBack give = give_back(i, carried_in);
    CarryOut carry_out{false, A, block.hi[A], g.window[A], {}};

    const int64_t succ = plan_.successor(i), shared = plan_.shared_from(i);
    std::optional<std::vector<PredictionPart>> successor_parts;  // from the next block's carry file
    RowQueue carried(carried_, A), from_successor;
    bool decided = false;
    auto decide = [&] {
      decided = true;
      next = schedule.next(i);
      carry_out.keep = succ >= 0 && next == succ;
      if (succ >= 0 && !carry_out.keep) {
        std::vector<PredictionPart> want;
        for (int64_t row = shared; row <= r1; ++row)
          for (const auto& s : row_starts(i, row)) want.push_back(part_in(s, block.lo, block.hi));
        successor_parts = out_.read_carry(i, std::move(want));
        if (successor_parts) from_successor = RowQueue(*successor_parts, A);
      }
      halo_future = read_halo_async(next, carry_out.keep);
    };

    std::vector<PredictionPart> pending;
    for (int64_t row = r0; row <= r1; ++row) {
      if (!decided && row >= shared) decide();
      const int64_t row_start = g.start(A, row);
      if (successor_parts && row >= shared && row > give.last_row) {  // the next block's worker computed it
        from_successor.take(row_start, [&](const PredictionPart& p) {
          pending.push_back(p);
          ++received_;
        });
        carried.skip(row_start);
        blend(pending, a.acc, a.wsum, a.sq, block.lo, block.hi);
        continue;
      }
      from_successor.skip(row_start);
      if (row >= first) {
        compute_row(i, row, halo, h0, where, a, block, carry_out, give);
        continue;
      }
      carried.take(row_start, [&](const PredictionPart& p) {  // carried from the previous block, in window order
        pending.push_back(p);
        carry_out.add_carried(p);
      });
      blend(pending, a.acc, a.wsum, a.sq, block.lo, block.hi);
    }
    if (!decided) decide();
    halo = torch::Tensor();
    carried_ = carry_out.keep ? std::move(carry_out.parts) : std::vector<PredictionPart>();
    auto& acc = a.acc;
    auto& wsum = a.wsum;
    auto& sq = a.sq;

    // Results of the block; write them, flush, mark the block done.
    auto mean = acc.div_(wsum);
    torch::Tensor sd, labels;
    if (o_.write_std) sd = sq.div_(wsum).sub_(mean * mean).clamp_min_(0).sqrt_();
    if (o_.activation == BlockwiseOptions::Activation::Sigmoid) mean = mean.sigmoid_();
    if (o_.activation == BlockwiseOptions::Activation::Softmax) mean = mean.softmax(0);
    if (o_.write_argmax) labels = mean.argmax(0, true).to(torch::kInt).cpu();
    expect_finite(i, "blended prediction", mean, "float32");
    if (sd.defined()) expect_finite(i, "spread (std)", sd, "float32");
    auto store = [&](const torch::Tensor& t, const char* what) {  // in the output dtype
      if (o_.output_dtype == torch::kByte) return t.clamp(0, 1).mul_(255).round_().to(torch::kByte).cpu();
      auto out = t.to(o_.output_dtype).cpu();
      if (o_.output_dtype != torch::kFloat) expect_finite(i, what, out, c10::toString(o_.output_dtype));
      return out;
    };
    out_.write_block(i, o_.write_mean ? store(mean, "blended prediction") : torch::Tensor(),
                     sd.defined() ? store(sd, "spread (std)") : sd, labels);
    ++blocks_;
    if (progress_) progress_(0, true);
  }

  // A block whose results hold NaN or infinity is not written (a run never marks such a block done): the model
  // returned them, or they overflow `dtype`.
  void expect_finite(int64_t i, const char* what, const torch::Tensor& t, const char* dtype) const {
    if (torch::isfinite(t).all().item<bool>()) return;
    const int64_t bad = t.numel() - torch::isfinite(t).sum().item<int64_t>();
    throw Error("model", out_.path() + ": " + describe_block(plan_, i) + ": the " + what + " has " +
                             std::to_string(bad) + " NaN or infinite " + (bad == 1 ? "value" : "values") + " of " +
                             std::to_string(t.numel()) + ": the model returned them, or they overflow " + dtype +
                             " (an input, pad value or precision out of the model's range?); nothing of the block "
                             "was written");
  }

  const BlockModel& model_;
  const BlockInput& input_;
  const BlockPlan& plan_;
  BlockwiseOutput& out_;
  const BlockwiseOptions& o_;
  std::function<void(int64_t, bool)> progress_;
  torch::Device blend_device_;
  torch::Tensor weight_cpu_, weight_;  // the window's weights (*W) for the torch path
  RowWeights<float> row_weights_;      // and for the CPU path (kernels/window_weights.hpp)
  ModelRunner runner_;
  std::vector<std::vector<int64_t>> flips_;  // with tta_flip: the dims of each flip (the identity first)
  std::vector<PredictionPart> carried_;      // rows the previous block passed on
  int64_t blocks_ = 0, windows_ = 0, received_ = 0;
  double model_seconds_ = 0;
};

}  // namespace qlty::detail
