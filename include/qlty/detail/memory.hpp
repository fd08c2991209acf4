#pragma once
// Deprecated path, kept for one release: the output buffers moved to <qlty/support/output_buffers.hpp> and
// release_cached_memory() to <qlty/memory.hpp> (see docs/architecture.md).
#pragma message("<qlty/detail/memory.hpp> is deprecated: include <qlty/memory.hpp>")
#include <qlty/memory.hpp>
