#pragma once
/// @file qlty.hpp
/// @brief Everything qlty offers: `#include <qlty/qlty.hpp>`.

#include <qlty/blend.hpp>
#include <qlty/blockwise.hpp>
#include <qlty/error.hpp>
#include <qlty/geometry.hpp>
#include <qlty/kernels.hpp>
#include <qlty/large_quilt.hpp>
#include <qlty/memory.hpp>
#include <qlty/patch_pairs.hpp>
#include <qlty/pyramid.hpp>
#include <qlty/quilt.hpp>
#include <qlty/quilt25d.hpp>
#include <qlty/tokens.hpp>
#include <qlty/version.hpp>
#include <qlty/weed.hpp>
#include <qlty/zarr.hpp>
#include <qlty/zarr_types.hpp>
