#pragma once
// IWYU pragma: private, include <qlty/mpi.hpp>
// The table of block claims of a distributed run, held in an MPI window on rank 0, and the schedule that takes
// blocks from it (what `qlty::mpi::infer_blockwise` plugs into the blockwise executor).

#include <mpi.h>

#include <qlty/blockwise/executor.hpp>
#include <qlty/blockwise/plan.hpp>

#include <sched.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace qlty::detail {

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

class ClaimSchedule : public BlockSchedule {
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

}  // namespace qlty::detail
