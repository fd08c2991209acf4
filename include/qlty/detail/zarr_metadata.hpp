#pragma once
// Deprecated path, kept for one release: the file moved to <qlty/zarr/metadata.hpp> (see docs/architecture.md).
#pragma message("<qlty/detail/zarr_metadata.hpp> is deprecated: include <qlty/zarr/metadata.hpp>")
#include <qlty/zarr/metadata.hpp>
