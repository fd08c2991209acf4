#pragma once
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

#include <qlty/blockwise_types.hpp>
#include <qlty/detail/blockwise_output.hpp>
#include <qlty/detail/blockwise_plan.hpp>
#include <qlty/detail/cpu_kernels.hpp>
#include <qlty/detail/torch_compat.hpp>
#include <qlty/error.hpp>
#include <qlty/kernels.hpp>

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

/// The box [off, off + ext) of the padded input (plan.g.shape; the input's rank): what lies outside the input
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
      std::string m = c10e ? c10e->what_without_backtrace() : e.what();
      if (qe && m.rfind("[qlty." + qe->tag() + "] ", 0) == 0) m = m.substr(qe->tag().size() + 8);
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
  for (int a = 0; a < plan.D; ++a) ext[2 + a] = plan.g.window[3 - plan.D + a];
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
        runner_(model, o) {
    const Grid3& g = plan_.g;
    weight_cpu_ = window_weights(g, true, torch::kFloat).view({g.window[0], g.window[1], g.window[2]});
    weight_ = weight_cpu_.to(blend_device_);
    if (o.tta_flip) {  // every subset of the flipped axes, the identity first
      std::vector<int64_t> axes = o.tta_axes;
      if (axes.empty())
        for (int64_t a = o.slicewise ? 1 : 0; a < plan.D; ++a) axes.push_back(a);  // slices: Y and X
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
    const Grid3& g = plan_.g;
    const auto n = plan_.at(i).first;
    std::array<int64_t, 3> kf{}, kl{};
    plan_.windows(i, kf, kl);
    std::vector<int64_t> off = {n, 0}, ext = {1, plan_.C};
    for (int a = 3 - plan_.D; a < 3; ++a) {
      const int64_t k0 = a == plan_.A ? first : kf[a], k1 = kl[a];
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
      return plan_.D == 2 ? x.unsqueeze(2) : x;
    };
    return std::async(o_.prefetch && i >= 0 ? std::launch::async : std::launch::deferred, read);
  }

  // Adds `pending` (predictions in window order) into the block's accumulators: one native pass on the CPU, three
  // torch ops per window elsewhere.
  void blend(std::vector<PredictionPart>& pending, torch::Tensor& acc, torch::Tensor& wsum, torch::Tensor& sq,
             const std::array<int64_t, 3>& b0, const std::array<int64_t, 3>& b1) const {
    if (blend_device_.is_cpu()) {
      std::vector<BlendPart> parts;
      for (const auto& c : pending) {
        const auto& p = c.pred;
        parts.push_back({p.data_ptr<float>(),
                         plan_.moments ? p.data_ptr<float>() + plan_.Cout * p.stride(0) : nullptr,
                         p.stride(0),
                         p.stride(1),
                         p.stride(2),
                         p.stride(3),
                         c.origin,
                         {p.size(1), p.size(2), p.size(3)},
                         c.start});
      }
      std::array<int64_t, 3> bext{};
      for (int a = 0; a < 3; ++a) bext[a] = b1[a] - b0[a];
      blend_cpu(acc.data_ptr<float>(), wsum.data_ptr<float>(), sq.defined() ? sq.data_ptr<float>() : nullptr,
                plan_.Cout, b0, bext, parts, plan_.g);
    } else {
      for (const auto& c : pending) {
        torch::Tensor a_view = acc, w_view = wsum, s_view = sq, p = c.pred.to(blend_device_), w = weight_;
        bool empty = false;
        for (int a = 0; a < 3 && !empty; ++a) {
          const int64_t r0 = std::max(c.origin[a], b0[a]), r1 = std::min(c.origin[a] + p.size(a + 1), b1[a]);
          empty = r1 <= r0;
          if (empty) break;
          a_view = a_view.narrow(a + 1, r0 - b0[a], r1 - r0);
          w_view = w_view.narrow(a, r0 - b0[a], r1 - r0);
          if (sq.defined()) s_view = s_view.narrow(a + 1, r0 - b0[a], r1 - r0);
          p = p.narrow(a + 1, r0 - c.origin[a], r1 - r0);
          w = w.narrow(a, r0 - c.start[a], r1 - r0);
        }
        if (empty) continue;
        const auto mean = plan_.moments ? p.narrow(0, 0, plan_.Cout) : p;
        a_view.addcmul_(mean, w);
        w_view.add_(w);
        if (sq.defined()) s_view.addcmul_(plan_.moments ? p.narrow(0, plan_.Cout, plan_.Cout) : p.square(), w);
      }
    }
    pending.clear();
  }

  // The windows of row `row` of block i, in global order.
  std::vector<std::array<int64_t, 3>> row_starts(int64_t i, int64_t row) const {
    const Grid3& g = plan_.g;
    const int A = plan_.A, o1 = A == 0 ? 1 : 0, o2 = 2;  // the other axes (for 2D, Z has one window)
    std::array<int64_t, 3> kf{}, kl{};
    plan_.windows(i, kf, kl);
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
    const int A = plan_.A;
    std::array<int64_t, 3> origin = s;
    origin[A] = std::max(s[A], b0[A]);
    const int64_t len = std::min(s[A] + plan_.g.window[A], b1[A]) - origin[A];
    if (full.defined()) return {s, origin, full.narrow(A + 1, origin[A] - s[A], len).clone()};
    std::vector<int64_t> shape = {plan_.pred_channels(), plan_.g.window[0], plan_.g.window[1], plan_.g.window[2]};
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
    auto windows = gather_windows(halo, origins, plan_.g.window);
    if (plan_.D == 2) windows = windows.squeeze(2);
    windows = windows.to(o_.device, torch::kFloat);
    const std::string what =
        "windows " + std::to_string(s0) + ".." + std::to_string(s1 - 1) + " of row " + std::to_string(row);
    const auto t0 = std::chrono::steady_clock::now();
    torch::Tensor pred;
    if (flips_.empty()) {
      pred = runner_(windows, plan_.Cout, where, what);
    } else {  // the mean of the flipped predictions, flipped back (and their mean square for the std)
      torch::Tensor sum, sumsq;
      for (const auto& dims : flips_) {
        auto y = dims.empty() ? runner_(windows, plan_.Cout, where, what)
                              : runner_(windows.flip(dims), plan_.Cout, where, what + " (flipped)").flip(dims);
        sum = sum.defined() ? sum.add_(y) : y.clone();
        if (plan_.moments) sumsq = sumsq.defined() ? sumsq.addcmul_(y, y) : y * y;
      }
      const double n = static_cast<double>(flips_.size());
      pred = plan_.moments ? torch::cat({sum.div_(n), sumsq.div_(n)}, 1) : sum.div_(n);
    }
    model_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    pred = pred.to(blend_device_, torch::kFloat);
    return plan_.D == 2 ? pred.unsqueeze(2) : pred;
  }

  void compute_block(int64_t i, bool carried_in, std::future<torch::Tensor>& halo_future, BlockSchedule& schedule,
                     int64_t& next) {
    const Grid3& g = plan_.g;
    const int A = plan_.A;
    std::array<int64_t, 3> b0{}, b1{};
    plan_.box(i, b0, b1);
    const std::string where = out_.path() + ": " + describe_block(plan_, i);
    torch::Tensor halo = halo_future.get();
    const int64_t first = plan_.first_computed_row(i, carried_in);
    const auto [r0, r1] = plan_.rows(i);
    std::array<int64_t, 3> h0{0, 0, 0};
    if (first <= r1) {
      const auto box = input_box(i, first).first;
      for (int a = 3 - plan_.D; a < 3; ++a) h0[a] = box[2 + a - (3 - plan_.D)];
    }

    torch::Tensor acc, wsum, sq;
    auto allocate = [&] {
      const auto fopts = torch::TensorOptions().dtype(torch::kFloat).device(blend_device_);
      acc = torch::zeros({plan_.Cout, b1[0] - b0[0], b1[1] - b0[1], b1[2] - b0[2]}, fopts);
      wsum = torch::zeros({b1[0] - b0[0], b1[1] - b0[1], b1[2] - b0[2]}, fopts);
      sq = o_.write_std ? torch::zeros_like(acc) : torch::Tensor();
    };
    try {
      allocate();
    } catch (const c10::Error&) {
      if (blend_device_.is_cpu()) throw;
      acc = wsum = sq = torch::Tensor();
      blend_device_ = torch::kCPU;  // from now on: the accumulators do not fit on the device
      weight_ = weight_cpu_;
      for (auto& c : carried_) c.pred = c.pred.cpu();
      allocate();
    }

    // A block that starts a segment mid-column computes the rows it shares with its predecessor first; when that
    // block is not done, their parts inside it go to its worker through a carry file.
    const int64_t pred = plan_.predecessor(i);
    const bool give_back = !carried_in && pred >= 0 && !out_.is_done(pred);
    const int64_t give_last = give_back ? plan_.rows(pred).second : -1;
    std::array<int64_t, 3> p0{}, p1{};
    if (give_back) plan_.box(pred, p0, p1);
    std::vector<PredictionPart> for_pred;

    // Rows [shared, r1] meet the successor too. There the schedule says who computes the successor: this worker
    // (carry the rows over in memory) or another (take the rows from its carry file when it is there).
    const int64_t succ = plan_.successor(i), shared = plan_.shared_from(i);
    bool decided = false, mine = false;
    std::optional<std::vector<PredictionPart>> from_file;
    size_t fi = 0;
    auto decide = [&] {
      decided = true;
      next = schedule.next(i);
      mine = succ >= 0 && next == succ;
      if (succ >= 0 && !mine) {
        std::vector<PredictionPart> want;
        for (int64_t row = shared; row <= r1; ++row)
          for (const auto& s : row_starts(i, row)) want.push_back(part_in(s, b0, b1));
        from_file = out_.read_carry(i, std::move(want));
      }
      halo_future = read_halo_async(next, mine);
    };

    std::vector<PredictionPart> pending, carry_out;
    size_t ci = 0;
    for (int64_t row = r0; row <= r1; ++row) {
      if (!decided && row >= shared) decide();
      const int64_t row_start = g.start(A, row);
      if (from_file && row >= shared && row > give_last) {  // from the successor's worker
        for (; fi < from_file->size() && (*from_file)[fi].start[A] == row_start; ++fi) {
          pending.push_back((*from_file)[fi]);
          ++received_;
        }
        while (ci < carried_.size() && carried_[ci].start[A] == row_start) ++ci;
        blend(pending, acc, wsum, sq, b0, b1);
        continue;
      }
      if (from_file)
        while (fi < from_file->size() && (*from_file)[fi].start[A] == row_start) ++fi;
      if (row < first) {  // carried from the previous block of the column, in window order
        for (; ci < carried_.size() && carried_[ci].start[A] == row_start; ++ci) {
          pending.push_back(carried_[ci]);
          if (mine && carried_[ci].start[A] + g.window[A] > b1[A]) carry_out.push_back(carried_[ci]);  // 3 blocks
        }
        blend(pending, acc, wsum, sq, b0, b1);
        continue;
      }
      const auto starts = row_starts(i, row);
      for (size_t s0 = 0; s0 < starts.size(); s0 += static_cast<size_t>(o_.batch_size)) {
        const size_t s1 = std::min(starts.size(), s0 + static_cast<size_t>(o_.batch_size));
        auto pred_batch = predict(halo, h0, starts, s0, s1, row, where);
        for (size_t j = s0; j < s1; ++j) {
          const auto& s = starts[j];
          auto pj = pred_batch[static_cast<int64_t>(j - s0)];
          pending.push_back({s, s, pj});
          if (mine && s[A] + g.window[A] > b1[A]) {
            std::array<int64_t, 3> origin = s;
            origin[A] = b1[A];
            carry_out.push_back({s, origin, pj.narrow(A + 1, b1[A] - s[A], s[A] + g.window[A] - b1[A]).clone()});
          }
          if (give_back && row <= give_last) for_pred.push_back(part_in(s, p0, p1, pj));
        }
        blend(pending, acc, wsum, sq, b0, b1);
        windows_ += static_cast<int64_t>(s1 - s0);
        if (progress_) progress_(static_cast<int64_t>(s1 - s0), false);
      }
      if (give_back && row == give_last) {
        out_.write_carry(pred, for_pred);
        for_pred.clear();
      }
    }
    if (!decided) decide();
    halo = torch::Tensor();
    carried_ = mine ? std::move(carry_out) : std::vector<PredictionPart>();

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
    throw Error("model", out_.path() + ": " + describe_block(plan_, i) + ": the " + what + " has " + std::to_string(bad) + " NaN or infinite " +
                             (bad == 1 ? "value" : "values") + " of " + std::to_string(t.numel()) +
                             ": the model returned them, or they overflow " + dtype +
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
  torch::Tensor weight_cpu_, weight_;
  ModelRunner runner_;
  std::vector<std::vector<int64_t>> flips_;  // with tta_flip: the dims of each flip (the identity first)
  std::vector<PredictionPart> carried_;      // rows the previous block passed on
  int64_t blocks_ = 0, windows_ = 0, received_ = 0;
  double model_seconds_ = 0;
};

}  // namespace qlty::detail
