#pragma once
// Output allocation. Large CPU outputs get memory advised for transparent huge pages: a fresh buffer of
// hundreds of MB otherwise costs one page fault per 4 KiB on first touch, which takes longer than the copy that
// fills it (measured in benchmarks/bench_quilt.cpp). Freed outputs go to a small cache (OutputCache) that the next
// output of the same size takes: a loop that unstitches or stitches batches of one shape then writes into pages
// it already has, as the `_out` calls do.

#include <torch/torch.h>

#include <cstdlib>
#include <deque>
#include <mutex>
#include <utility>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace qlty::detail {

constexpr size_t kHugePage = size_t(2) << 20;

/// Freed output blocks kept for reuse: at most kBlocks blocks and a byte budget of min(1 GiB, RAM / 16); the
/// oldest goes first. Blocks are matched by their exact length (sizes rounded to 2 MiB).
class OutputCache {
 public:
  static constexpr size_t kBlocks = 4;

  static OutputCache& instance() {
    static auto* cache = new OutputCache;  // never destroyed: tensors may be freed during static destruction
    return *cache;
  }

  void* take(size_t len) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = blocks_.begin(); it != blocks_.end(); ++it)
      if (it->second == len) {
        void* p = it->first;
        bytes_ -= len;
        blocks_.erase(it);
        return p;
      }
    return nullptr;
  }

  void give(void* p, size_t len) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (len > budget_) {
      lock.unlock();
      std::free(p);
      return;
    }
    std::deque<void*> evicted;
    while (!blocks_.empty() && (blocks_.size() >= kBlocks || bytes_ + len > budget_)) {
      evicted.push_back(blocks_.front().first);
      bytes_ -= blocks_.front().second;
      blocks_.pop_front();
    }
    blocks_.emplace_back(p, len);
    bytes_ += len;
    lock.unlock();
    for (void* q : evicted) std::free(q);
  }

  /// Frees every cached block; returns the bytes released.
  size_t release() {
    std::deque<std::pair<void*, size_t>> blocks;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      blocks.swap(blocks_);
      bytes_ = 0;
    }
    size_t n = 0;
    for (auto& [p, len] : blocks) {
      std::free(p);
      n += len;
    }
    return n;
  }

  size_t cached_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return bytes_;
  }

 private:
  OutputCache() {
    budget_ = size_t(1) << 30;
#if defined(__linux__)
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    if (pages > 0 && page > 0) budget_ = std::min(budget_, static_cast<size_t>(pages) * static_cast<size_t>(page) / 16);
#endif
  }
  std::mutex mutex_;
  std::deque<std::pair<void*, size_t>> blocks_;
  size_t bytes_ = 0, budget_ = 0;
};

inline torch::Tensor empty_output(c10::IntArrayRef sizes, const torch::TensorOptions& options) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  int64_t numel = 1, nbytes = 0;
  for (auto v : sizes)
    TORCH_CHECK_VALUE(v >= 0 && !__builtin_mul_overflow(numel, v, &numel), "qlty: a tensor of shape ", sizes,
                      " has more elements than 64 bits can count");
  TORCH_CHECK_VALUE(
      !__builtin_mul_overflow(numel, static_cast<int64_t>(c10::elementSize(c10::typeMetaToScalarType(options.dtype()))),
                              &nbytes),
      "qlty: a tensor of shape ", sizes, " has more bytes than 64 bits can count");
  const size_t bytes = static_cast<size_t>(nbytes);
  if (options.device().is_cpu() && bytes >= kHugePage && !options.pinned_memory()) {
    const size_t len = (bytes + kHugePage - 1) / kHugePage * kHugePage;
    void* p = OutputCache::instance().take(len);
    if (!p && (p = std::aligned_alloc(kHugePage, len)))
      madvise(p, len, MADV_HUGEPAGE);  // advice only: without THP this is an ordinary buffer
    if (p)
      return torch::from_blob(
          p, sizes, [len](void* q) { OutputCache::instance().give(q, len); }, options);
  }
#endif
  return torch::empty(sizes, options);
}

}  // namespace qlty::detail
