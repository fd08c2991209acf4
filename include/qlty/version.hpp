#pragma once
/// @file version.hpp
/// @brief The library's version.

#define QLTY_VERSION_MAJOR 0
#define QLTY_VERSION_MINOR 1
#define QLTY_VERSION_PATCH 0
/// @brief major * 10000 + minor * 100 + patch
#define QLTY_VERSION (QLTY_VERSION_MAJOR * 10000 + QLTY_VERSION_MINOR * 100 + QLTY_VERSION_PATCH)
