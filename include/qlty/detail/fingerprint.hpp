#pragma once
// Deprecated path, kept for one release: the file moved to <qlty/blockwise/fingerprint.hpp> (see docs/architecture.md).
#pragma message("<qlty/detail/fingerprint.hpp> is deprecated: include <qlty/blockwise/fingerprint.hpp>")
#include <qlty/blockwise/fingerprint.hpp>
