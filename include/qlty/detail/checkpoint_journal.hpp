#pragma once
// Deprecated path, kept for one release: the file moved to <qlty/large_quilt/checkpoint_journal.hpp> (see
// docs/architecture.md).
#pragma message("<qlty/detail/checkpoint_journal.hpp> is deprecated: include <qlty/large_quilt/checkpoint_journal.hpp>")
#include <qlty/large_quilt/checkpoint_journal.hpp>
