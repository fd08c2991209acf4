# The libraries qlty's headers use besides LibTorch and OpenMP, all Debian packages: nlohmann-json (Zarr
# metadata), blosc, lz4, zstd and zlib (Zarr codecs). Included by qlty's build and by the installed qltyConfig.
find_package(PkgConfig REQUIRED QUIET)
if(NOT TARGET ZLIB::ZLIB)
  find_package(ZLIB REQUIRED)
endif()
if(NOT TARGET nlohmann_json::nlohmann_json)
  find_package(nlohmann_json 3.9 REQUIRED)
endif()
foreach(_qlty_dep IN ITEMS blosc liblz4 libzstd)
  string(TOUPPER "QLTY_${_qlty_dep}" _qlty_var)
  if(NOT TARGET PkgConfig::${_qlty_var})
    pkg_check_modules(${_qlty_var} REQUIRED IMPORTED_TARGET GLOBAL ${_qlty_dep})
  endif()
endforeach()
set(QLTY_DEPENDENCY_TARGETS nlohmann_json::nlohmann_json PkgConfig::QLTY_BLOSC PkgConfig::QLTY_LIBLZ4
                            PkgConfig::QLTY_LIBZSTD ZLIB::ZLIB)
