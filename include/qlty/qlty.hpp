#pragma once
/// @file qlty.hpp
/// @brief Everything qlty offers: `#include <qlty/qlty.hpp>`.

#include "blend.hpp"
#include "blockwise.hpp"
#include "error.hpp"
#include "geometry.hpp"
#include "kernels.hpp"
#include "large_quilt.hpp"
#include "patch_pairs.hpp"
#include "quilt.hpp"
#include "version.hpp"
#include "weed.hpp"
#include "zarr.hpp"
