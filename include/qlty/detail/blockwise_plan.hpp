#pragma once
// Deprecated path, kept for one release: the file moved to <qlty/blockwise/plan.hpp> (see docs/architecture.md).
#pragma message("<qlty/detail/blockwise_plan.hpp> is deprecated: include <qlty/blockwise/plan.hpp>")
#include <qlty/blockwise/plan.hpp>
