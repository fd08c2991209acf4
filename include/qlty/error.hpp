#pragma once
/// @file error.hpp
/// @brief qlty's exception for what is not about tensor arguments: files, Zarr stores, checkpoints.

#include <stdexcept>
#include <string>
#include <utility>

namespace qlty {

/// @brief Every file and storage error of qlty. `what()` starts with a stable tag, `[qlty.<area>.<kind>]`,
/// followed by the file concerned and what is wrong with it; `tag()` returns the tag alone.
///
/// Tags: `zarr.format` (a file that is not valid), `zarr.unsupported` (valid but not supported),
/// `zarr.missing` (no array or group there), `zarr.exists` (creating where one exists), `io` (the operating
/// system refused: permissions, full disk), `lock` (a lock could not be taken), `checkpoint` (a resume whose
/// settings differ from the stored ones), `model` (a model that throws or returns the wrong shape in a blockwise
/// run), `input` (an input file the `qlty` program cannot use), `overlap` (an output that is, holds or lies inside
/// its input), `mpi.peer` (another rank of a distributed run failed).
class Error : public std::runtime_error {
 public:
  Error(std::string tag, const std::string& message)
      : std::runtime_error("[qlty." + tag + "] " + message), tag_(std::move(tag)) {}

  /// @brief The tag without brackets, e.g. `zarr.format`.
  const std::string& tag() const noexcept { return tag_; }

 private:
  std::string tag_;
};

}  // namespace qlty
