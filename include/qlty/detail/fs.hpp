#pragma once
// Deprecated path, kept for one release: the file moved to <qlty/support/fs.hpp> (see docs/architecture.md).
#pragma message("<qlty/detail/fs.hpp> is deprecated: include <qlty/support/fs.hpp>")
#include <qlty/support/fs.hpp>
