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
/// `qlty/blockwise/executor.hpp`), so windows are evaluated once in the common case and the bytes always equal a
/// one-process run. A rank whose run fails marks the run failed; the other ranks stop at their next block with an
/// Error (`mpi.peer`). Blocks already marked done stay done: rerunning with any number of ranks resumes.

#include <mpi.h>

#include <qlty/blockwise.hpp>
#include <qlty/mpi/claims.hpp>

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
  s.total.windows_grid = plan.images * plan.grid.per_image();
  s.total.out_channels = plan.out_channels;
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
