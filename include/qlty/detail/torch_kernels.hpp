#pragma once
// Deprecated path, kept for one release: the file moved to <qlty/kernels/torch.hpp> (see docs/architecture.md).
#pragma message("<qlty/detail/torch_kernels.hpp> is deprecated: include <qlty/kernels/torch.hpp>")
#include <qlty/kernels/torch.hpp>
