#pragma once
// Deprecated path, kept for one release: the file moved to <qlty/large_quilt/chunk_store.hpp> (see
// docs/architecture.md).
#pragma message("<qlty/detail/chunk_store.hpp> is deprecated: include <qlty/large_quilt/chunk_store.hpp>")
#include <qlty/large_quilt/chunk_store.hpp>
