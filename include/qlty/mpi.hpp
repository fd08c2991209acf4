#pragma once
/// @file mpi.hpp
/// @brief Blockwise inference over the ranks of an MPI communicator (`mpirun`, `srun`): `qlty::mpi::infer_blockwise`.
/// Optional: link `qlty::mpi` (CMake) to use it; `qlty/qlty.hpp` and `qlty::qlty` do not need MPI.
///
/// Rank 0 validates the settings, creates the output (or checks it on resume) and scans the done markers; then
/// every rank takes blocks from a table of claims held in an MPI window on rank 0 (one-sided, under an exclusive
/// lock), so a slow rank does not hold the others. A rank first extends its own run of blocks along the slab
/// column (the rows two blocks share are then carried in memory); otherwise it takes the head of a free run that
/// nobody works towards, or else the middle of the longest free run. Where two ranks meet in a column, the later
/// block's rank computes the shared rows first and leaves them in a carry file for the other (see
/// `detail/blockwise_executor.hpp`), so windows are evaluated once in the common case and the bytes always equal a
/// one-process run. A rank whose run fails marks the run failed; the other ranks stop at their next block with an
/// Error (`mpi.peer`). Blocks already marked done stay done: rerunning with any number of ranks resumes.

#include <mpi.h>

#include <qlty/blockwise.hpp>

#include <sched.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace qlty::mpi {

/// @brief What one rank did.
struct RankSummary {
  int rank = 0;
  int64_t blocks_computed = 0;
  int64_t windows_computed = 0;  ///< model evaluations
  int64_t windows_received = 0;  ///< predictions taken from another rank's carry file
  double seconds = 0;            ///< from the call to the end of this rank's last block
  double model_seconds = 0;      ///< of which in the model's calls
};

/// @brief What a distributed run did: the totals (as `qlty::infer_blockwise` reports them) and each rank's share.
struct DistributedSummary {
  BlockwiseSummary total;
  std::vector<RankSummary> ranks;  ///< on rank 0: every rank; elsewhere: this rank's only
};

/// @brief This rank's index among the ranks on its node, and their number (a shared-memory split of `comm`).
inline std::pair<int, int> local_rank(MPI_Comm comm = MPI_COMM_WORLD) {
  MPI_Comm node;
  MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  int r = 0, n = 1;
  MPI_Comm_rank(node, &r);
  MPI_Comm_size(node, &n);
  MPI_Comm_free(&node);
  return {r, n};
}

/// @brief The device of this rank: `cuda` becomes `cuda:<local rank mod GPUs on the node>`; `cuda:N` and other
/// devices stay as given.
inline torch::Device rank_device(const torch::Device& requested, MPI_Comm comm = MPI_COMM_WORLD) {
  if (!requested.is_cuda() || requested.has_index()) return requested;
  const int gpus = static_cast<int>(torch::cuda::device_count());
  TORCH_CHECK_VALUE(gpus > 0, "qlty::mpi::rank_device: cuda asked for, but no GPU is visible to this rank");
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(local_rank(comm).first % gpus));
}

namespace detail {

using qlty::detail::BlockPlan;

// The window on rank 0: a header of int64 (failed rank + 1, finished ranks, windows computed, blocks done), then
// one int32 per block in run order: 0 free, 1 done, 2 + r claimed by rank r.
constexpr int kFailed = 0, kFinished = 1, kWindows = 2, kBlocks = 3, kHeader = 4;

class Claims {
 public:
  Claims(MPI_Comm comm, const BlockPlan& plan, const std::vector<int32_t>& initial) : plan_(plan) {
    MPI_Comm_rank(comm, &rank_);
    const MPI_Aint bytes = rank_ == 0 ? MPI_Aint(kHeader * 8 + plan.total() * 4) : 0;
    MPI_Win_allocate(bytes, 1, MPI_INFO_NULL, comm, &base_, &win_);
    if (rank_ == 0) {
      std::memset(base_, 0, static_cast<size_t>(bytes));
      std::memcpy(static_cast<char*>(base_) + kHeader * 8, initial.data(), initial.size() * 4);
    }
    MPI_Barrier(comm);
    state_.resize(static_cast<size_t>(plan.total()));
  }
  Claims(const Claims&) = delete;
  Claims& operator=(const Claims&) = delete;
  ~Claims() {
    if (freeable_) MPI_Win_free(&win_);
  }

  /// Claims the next block for this rank after `after` (see the file's notes); -1 when none is free. Throws
  /// Error `mpi.peer` when another rank failed.
  int64_t claim(int64_t after) {
    MPI_Win_lock(MPI_LOCK_EXCLUSIVE, 0, 0, win_);
    int64_t failed = 0;
    MPI_Get(&failed, 1, MPI_INT64_T, 0, kFailed * 8, 1, MPI_INT64_T, win_);
    MPI_Get(state_.data(), static_cast<int>(state_.size()), MPI_INT32_T, 0, kHeader * 8,
            static_cast<int>(state_.size()), MPI_INT32_T, win_);
    MPI_Win_flush(0, win_);
    int64_t pick = -1;
    if (failed == 0) {
      pick = choose(after);
      if (pick >= 0) {
        const int32_t mine = 2 + rank_;
        MPI_Put(&mine, 1, MPI_INT32_T, 0, kHeader * 8 + pick * 4, 1, MPI_INT32_T, win_);
      }
    }
    MPI_Win_unlock(0, win_);
    if (failed != 0) throw_peer(failed - 1);
    return pick;
  }

  /// Adds to a header counter.
  void add(int slot, int64_t v) {
    MPI_Win_lock(MPI_LOCK_SHARED, 0, 0, win_);
    MPI_Accumulate(&v, 1, MPI_INT64_T, 0, slot * 8, 1, MPI_INT64_T, MPI_SUM, win_);
    MPI_Win_unlock(0, win_);
  }

  /// The header counters.
  std::array<int64_t, kHeader> header() {
    std::array<int64_t, kHeader> h{};
    MPI_Win_lock(MPI_LOCK_SHARED, 0, 0, win_);
    MPI_Get_accumulate(nullptr, 0, MPI_INT64_T, h.data(), kHeader, MPI_INT64_T, 0, 0, kHeader, MPI_INT64_T, MPI_NO_OP,
                       win_);
    MPI_Win_unlock(0, win_);
    return h;
  }

  /// Marks the run failed by this rank (the first failure wins).
  void fail() {
    const int64_t me = rank_ + 1, zero = 0;
    int64_t old = 0;
    MPI_Win_lock(MPI_LOCK_EXCLUSIVE, 0, 0, win_);
    MPI_Compare_and_swap(&me, &zero, &old, MPI_INT64_T, 0, kFailed * 8, win_);
    MPI_Win_unlock(0, win_);
    freeable_ = false;  // the other ranks may never reach the collective free
  }

  /// Waits until every rank has finished (throws Error `mpi.peer` when one failed).
  void finish(int ranks) {
    add(kFinished, 1);
    for (;;) {
      const auto h = header();
      if (h[kFailed] != 0) {
        freeable_ = false;
        throw_peer(h[kFailed] - 1);
      }
      if (h[kFinished] == ranks) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }

 private:
  [[noreturn]] void throw_peer(int64_t r) {
    freeable_ = false;
    throw Error("mpi.peer", "rank " + std::to_string(r) + " failed (see its message); rank " + std::to_string(rank_) +
                                " stopped after its last finished block; rerun to resume");
  }

  int64_t choose(int64_t after) const {
    const int64_t T = static_cast<int64_t>(state_.size());
    if (after >= 0) {
      const int64_t s = plan_.successor(after);
      if (s >= 0 && state_[s] == 0) return s;  // extend the own run: carry in memory
    }
    // Free runs within a column: [a, b]. A run whose predecessor nobody computes right now is an open head.
    int64_t best_head = -1, best_head_len = 0, best_mid = -1, best_mid_len = 0;
    for (int64_t a = 0; a < T;) {
      if (state_[a] != 0) {
        ++a;
        continue;
      }
      int64_t b = a;
      while (plan_.successor(b) >= 0 && state_[b + 1] == 0) ++b;
      const int64_t len = b - a + 1, p = plan_.predecessor(a);
      if (p < 0 || state_[p] == 1) {
        if (len > best_head_len) best_head = a, best_head_len = len;
      } else if (len > best_mid_len) {
        best_mid = a + len / 2, best_mid_len = len;
      }
      a = b + 1;
    }
    if (best_head >= 0 && best_head_len >= best_mid_len / 2) return best_head;
    return best_mid >= 0 ? best_mid : best_head;
  }

  const BlockPlan& plan_;
  int rank_ = 0;
  void* base_ = nullptr;
  MPI_Win win_;
  std::vector<int32_t> state_;
  bool freeable_ = true;
};

class ClaimSchedule : public qlty::detail::BlockSchedule {
 public:
  explicit ClaimSchedule(Claims& claims) : claims_(claims) {}
  int64_t next(int64_t after) override { return claims_.claim(after); }

 private:
  Claims& claims_;
};

// Rank 0's outcome of the setup, sent to every rank: an error's tag and message, or the channel count.
inline void broadcast_setup(MPI_Comm comm, int64_t& cout, std::string& tag, std::string& message) {
  int64_t sizes[3] = {cout, static_cast<int64_t>(tag.size()), static_cast<int64_t>(message.size())};
  MPI_Bcast(sizes, 3, MPI_INT64_T, 0, comm);
  cout = sizes[0];
  tag.resize(static_cast<size_t>(sizes[1]));
  message.resize(static_cast<size_t>(sizes[2]));
  if (sizes[1]) MPI_Bcast(tag.data(), static_cast<int>(sizes[1]), MPI_CHAR, 0, comm);
  if (sizes[2]) MPI_Bcast(message.data(), static_cast<int>(sizes[2]), MPI_CHAR, 0, comm);
}

}  // namespace detail

/// @brief Runs `model` over every window of `input` on all ranks of `comm` (a collective call: every rank passes
/// the same input, output and options; `options.device` may differ per rank, see `rank_device`) and writes the
/// blended result to `output`, which every rank must reach (shared storage). The bytes equal
/// `qlty::infer_blockwise`'s. `options.progress` is called on rank 0 only, with the progress of all ranks.
inline DistributedSummary infer_blockwise(const BlockModel& model, const BlockInput& input, const std::string& output,
                                          const BlockwiseOptions& options, MPI_Comm comm = MPI_COMM_WORLD) {
  using namespace qlty::detail;
  const auto t_start = std::chrono::steady_clock::now();
  const char* who = "qlty::mpi::infer_blockwise";
  int rank = 0, ranks = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &ranks);
  auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count(); };

  // Rank 0 checks, creates or resumes the output and scans the markers; the others learn the outcome.
  BlockPlan plan;
  std::optional<BlockwiseOutput> out;
  std::vector<int32_t> state;
  int64_t cout = 0;
  std::string tag, message;
  std::exception_ptr failure;
  if (rank == 0) {
    try {
      check_blockwise_options(model, output, options, who);
      TORCH_CHECK_VALUE(options.part.second == 1, who, ": part is for runs without MPI; got part ", options.part.first,
                        " of ", options.part.second);
      TORCH_CHECK_VALUE(options.max_blocks == -1, who, ": max_blocks is for one process; got ", options.max_blocks);
      plan = plan_grid(input.shape(), options, who);
      const auto existing = read_manifest(output);
      const bool resuming = existing && !options.overwrite;
      cout =
          resuming ? existing->at("out_channels").get<int64_t>() : probe_channels(model, input, plan, options, output);
      plan_blocks(plan, options, cout, who);
      out.emplace(output, plan, input, options);
      state.resize(static_cast<size_t>(plan.total()));
      for (int64_t i = 0; i < plan.total(); ++i) state[i] = out->is_done(i) ? 1 : 0;
    } catch (const c10::Error& e) {
      failure = std::current_exception();
      message = e.what_without_backtrace();
    } catch (const std::exception& e) {
      failure = std::current_exception();
      message = e.what();
    }
    tag = failure ? "failed" : "";
  }
  detail::broadcast_setup(comm, cout, tag, message);
  if (!tag.empty()) {
    if (rank == 0) std::rethrow_exception(failure);
    throw Error("mpi.peer", "rank 0 failed to set up the run: " + message);
  }
  if (rank != 0) {
    plan = plan_grid(input.shape(), options, who);
    plan_blocks(plan, options, cout, who);
    BlockwiseOptions o = options;
    o.overwrite = false;
    out.emplace(output, plan, input, o, false);
  }

  detail::Claims claims(comm, plan, state);
  int64_t windows_planned = 0, blocks_done0 = 0;
  if (rank == 0) {
    std::vector<int64_t> todo;
    for (int64_t i = 0; i < plan.total(); ++i) {
      if (state[i])
        ++blocks_done0;
      else
        todo.push_back(i);
    }
    windows_planned = planned_windows(plan, todo);
  }
  BlockwiseProgress progress;
  progress.blocks_total = plan.total();
  progress.windows_planned = windows_planned;
  auto report = [&] {
    if (rank != 0 || !options.progress) return;
    const auto h = claims.header();
    progress.windows_done = h[detail::kWindows];
    progress.blocks_done = blocks_done0 + h[detail::kBlocks];
    progress.seconds = seconds();
    options.progress(progress);
  };
  report();
  detail::ClaimSchedule schedule(claims);
  BlockExecutor executor(model, input, plan, *out, options, [&](int64_t windows, bool block_done) {
    if (windows) claims.add(detail::kWindows, windows);
    if (block_done) claims.add(detail::kBlocks, 1);
    report();
  });
  try {
    executor.run(schedule);
  } catch (const Error& e) {
    if (e.tag() != "mpi.peer") claims.fail();
    throw;
  } catch (...) {
    claims.fail();
    throw;
  }
  RankSummary mine{rank,      executor.blocks_computed(), executor.windows_computed(), executor.windows_received(),
                   seconds(), executor.model_seconds()};
  claims.finish(ranks);
  report();  // the last block may have been another rank's

  // Totals on every rank; each rank's share on rank 0.
  int64_t local[3] = {mine.blocks_computed, mine.windows_computed, mine.windows_received}, sum[3] = {0, 0, 0};
  MPI_Allreduce(local, sum, 3, MPI_INT64_T, MPI_SUM, comm);
  constexpr int kRow = 6;
  std::vector<double> all(static_cast<size_t>(rank == 0 ? kRow * ranks : 0));
  const double row[kRow] = {double(rank),
                            double(mine.blocks_computed),
                            double(mine.windows_computed),
                            double(mine.windows_received),
                            mine.seconds,
                            mine.model_seconds};
  MPI_Gather(row, kRow, MPI_DOUBLE, all.data(), kRow, MPI_DOUBLE, 0, comm);
  double model_sum = 0;
  MPI_Allreduce(&mine.model_seconds, &model_sum, 1, MPI_DOUBLE, MPI_SUM, comm);
  int complete = 0;
  if (rank == 0) complete = out->finish_if_complete() ? 1 : 0;
  MPI_Bcast(&complete, 1, MPI_INT, 0, comm);

  DistributedSummary s;
  s.total.blocks_total = plan.total();
  s.total.blocks_computed = sum[0];
  s.total.windows_computed = sum[1];
  s.total.windows_received = sum[2];
  MPI_Bcast(&blocks_done0, 1, MPI_INT64_T, 0, comm);
  s.total.blocks_skipped = blocks_done0;
  s.total.windows_grid = plan.N * plan.g.per_image();
  s.total.out_channels = plan.Cout;
  s.total.block = plan.spatial(plan.block);
  s.total.chunks = plan.spatial(plan.chunk);
  s.total.complete = complete != 0;
  s.total.seconds = seconds();
  s.total.model_seconds = model_sum;  // summed over ranks
  if (rank == 0) {
    for (int r = 0; r < ranks; ++r) {
      const double* a = all.data() + kRow * r;
      s.ranks.push_back({static_cast<int>(a[0]), static_cast<int64_t>(a[1]), static_cast<int64_t>(a[2]),
                         static_cast<int64_t>(a[3]), a[4], a[5]});
    }
  } else {
    s.ranks.push_back(mine);
  }
  return s;
}

}  // namespace qlty::mpi
