#pragma once
// Deprecated path, kept for one release: the file moved to <qlty/zarr/codecs.hpp> (see docs/architecture.md).
#pragma message("<qlty/detail/zarr_codecs.hpp> is deprecated: include <qlty/zarr/codecs.hpp>")
#include <qlty/zarr/codecs.hpp>
