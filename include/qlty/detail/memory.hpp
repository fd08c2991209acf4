#pragma once
// Output allocation. Large CPU outputs get memory advised for transparent huge pages: a fresh buffer of
// hundreds of MB otherwise costs one page fault per 4 KiB on first touch, which takes longer than the copy that
// fills it (measured in benchmarks/bench_quilt.cpp).

#include <torch/torch.h>

#include <cstdlib>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace qlty::detail {

constexpr size_t kHugePage = size_t(2) << 20;

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
    if (void* p = std::aligned_alloc(kHugePage, len)) {
      madvise(p, len, MADV_HUGEPAGE);  // advice only: without THP this is an ordinary buffer
      return torch::from_blob(
          p, sizes, [](void* q) { std::free(q); }, options);
    }
  }
#endif
  return torch::empty(sizes, options);
}

}  // namespace qlty::detail
