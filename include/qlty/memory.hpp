#pragma once
/// @file memory.hpp
/// @brief The CPU output buffers qlty keeps for reuse, and how to give them back.

#include <qlty/support/output_buffers.hpp>

namespace qlty {

/// @brief Frees the CPU output buffers qlty keeps for reuse (at most 4, within min(1 GiB, RAM / 16)), and returns
/// their bytes. Outputs of unstitch, stitch and the patch-pair calls, and the slabs of the disk-cached quilts'
/// accumulator chunks, come from this cache when a freed one of the same size is there, so a loop over batches of
/// one shape (or a quilt after another) pays for fresh pages once.
inline size_t release_cached_memory() { return detail::OutputCache::instance().release(); }

}  // namespace qlty
