#pragma once
// What differs between the LibTorch versions qlty builds against (Debian's 1.13 to PyPI's newest 2.x), in one
// place: every version test in qlty is one of the macros or functions below, never an `#if` elsewhere.
//
//   QLTY_TORCH_AT_LEAST(M, m)   LibTorch M.m or newer
//   QLTY_HAS_UNSIGNED_DTYPES    torch::kUInt16 / kUInt32 / kUInt64 exist (2.3): Zarr's uint16/32/64 read as
//                               themselves; before, as the next wider signed type (uint64 up to 2^63 - 1)
//   QLTY_HAS_AOTI               AOTInductor packages (.pt2) load (torch::inductor::AOTIModelPackageLoader, 2.6)
//   unsigned_dtype(bytes)       the unsigned integer dtype of that size, where this LibTorch has one
//   autocast_cuda::*            CUDA autocast's state (renamed in 2.4)

#include <ATen/autocast_mode.h>
#include <c10/core/ScalarType.h>
#include <torch/version.h>

#include <cstddef>
#include <optional>

#define QLTY_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

#if QLTY_TORCH_AT_LEAST(2, 3)
#define QLTY_HAS_UNSIGNED_DTYPES 1
#else
#define QLTY_HAS_UNSIGNED_DTYPES 0
#endif

#if QLTY_TORCH_AT_LEAST(2, 6) && !defined(C10_MOBILE)
#define QLTY_HAS_AOTI 1
#else
#define QLTY_HAS_AOTI 0
#endif

namespace qlty::detail {

/// The unsigned integer dtype of `bytes` bytes (1, 2, 4 or 8), or nullopt where this LibTorch has none
/// (uint16/32/64 before 2.3: readers then widen or refuse, as each documents).
inline std::optional<c10::ScalarType> unsigned_dtype(size_t bytes) {
  switch (bytes) {
    case 1:
      return c10::ScalarType::Byte;
#if QLTY_HAS_UNSIGNED_DTYPES
    case 2:
      return c10::ScalarType::UInt16;
    case 4:
      return c10::ScalarType::UInt32;
    case 8:
      return c10::ScalarType::UInt64;
#endif
    default:
      return std::nullopt;
  }
}

}  // namespace qlty::detail

namespace qlty::detail::autocast_cuda {

inline bool enabled() {
#if QLTY_TORCH_AT_LEAST(2, 4)
  return at::autocast::is_autocast_enabled(at::kCUDA);
#else
  return at::autocast::is_enabled();
#endif
}

inline c10::ScalarType dtype() {
#if QLTY_TORCH_AT_LEAST(2, 4)
  return at::autocast::get_autocast_dtype(at::kCUDA);
#else
  return at::autocast::get_autocast_gpu_dtype();
#endif
}

inline void set(bool on, c10::ScalarType dtype) {
#if QLTY_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_enabled(at::kCUDA, on);
  at::autocast::set_autocast_dtype(at::kCUDA, dtype);
#else
  at::autocast::set_enabled(on);
  at::autocast::set_autocast_gpu_dtype(dtype);
#endif
}

}  // namespace qlty::detail::autocast_cuda
