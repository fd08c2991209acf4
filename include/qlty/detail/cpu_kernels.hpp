#pragma once
// Deprecated path, kept for one release: the file moved to <qlty/kernels/cpu.hpp> (see docs/architecture.md).
#pragma message("<qlty/detail/cpu_kernels.hpp> is deprecated: include <qlty/kernels/cpu.hpp>")
#include <qlty/kernels/cpu.hpp>
