#pragma once
// Deprecated path, kept for one release: the file moved to <qlty/blockwise/executor.hpp> (see docs/architecture.md).
#pragma message("<qlty/detail/blockwise_executor.hpp> is deprecated: include <qlty/blockwise/executor.hpp>")
#include <qlty/blockwise/executor.hpp>
