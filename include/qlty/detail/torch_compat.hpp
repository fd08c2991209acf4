#pragma once
// Deprecated path, kept for one release: the file moved to <qlty/support/torch_compat.hpp> (see docs/architecture.md).
#pragma message("<qlty/detail/torch_compat.hpp> is deprecated: include <qlty/support/torch_compat.hpp>")
#include <qlty/support/torch_compat.hpp>
