#pragma once
// Deprecated path, kept for one release: the file moved to <qlty/blockwise/output.hpp> (see docs/architecture.md).
#pragma message("<qlty/detail/blockwise_output.hpp> is deprecated: include <qlty/blockwise/output.hpp>")
#include <qlty/blockwise/output.hpp>
