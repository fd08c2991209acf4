#pragma once
/// @file error.hpp
/// @brief qlty's exceptions: `Error` for files, Zarr stores, checkpoints and models; `ArgumentError` (a
/// `c10::ValueError`, as LibTorch's own argument checks throw) for a bad argument or setting, naming it.

#include <c10/util/Exception.h>
#include <c10/util/StringUtil.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace qlty {

/// @brief Every file and storage error of qlty. `what()` starts with a stable tag, `[qlty.<area>.<kind>]`,
/// followed by the file concerned and what is wrong with it; `tag()` returns the tag alone, `message()` the rest.
///
/// Tags: `zarr.format` (a file that is not valid: Zarr metadata and chunks, and qlty's own JSON and binary files),
/// `zarr.unsupported` (valid but not supported), `zarr.missing` (no array or group there), `zarr.exists` (creating
/// where one exists), `io` (the operating system refused: permissions, full disk), `lock` (a lock could not be
/// taken), `checkpoint` (a resume whose settings differ from the stored ones), `model` (a model that throws or
/// returns the wrong shape in a blockwise run), `input` (an input file the `qlty` program cannot use), `overlap`
/// (an output that is, holds or lies inside its input), `mpi.peer` (another rank of a distributed run failed).
///
/// Errors about one setting name it in `field()` (e.g. `axes`); a `checkpoint` error lists every setting that
/// differs in `mismatches()`. A program can word them in its own terms (flags) from these fields, without parsing
/// the message.
class Error : public std::runtime_error {
 public:
  /// @brief One setting of a stored run that differs from the requested one (values as JSON text; "none": absent).
  struct Mismatch {
    std::string key, stored, requested;
  };

  Error(std::string tag, const std::string& message) : Error(std::move(tag), message, std::string()) {}
  /// @brief An error about the setting or argument `field`.
  Error(std::string tag, const std::string& message, std::string field)
      : std::runtime_error("[qlty." + tag + "] " + message),
        tag_(std::move(tag)),
        message_(message),
        field_(std::move(field)) {}
  /// @brief A `checkpoint` error: the stored settings that differ from the requested ones.
  Error(std::string tag, const std::string& message, std::vector<Mismatch> mismatches)
      : Error(std::move(tag), message, std::string()) {
    mismatches_ = std::move(mismatches);
  }

  /// @brief The tag without brackets, e.g. `zarr.format`.
  const std::string& tag() const noexcept { return tag_; }
  /// @brief The message without the tag.
  const std::string& message() const noexcept { return message_; }
  /// @brief The setting or argument the error is about (e.g. `axes`), or empty.
  const std::string& field() const noexcept { return field_; }
  /// @brief For `checkpoint` errors: each stored setting that differs from the requested one.
  const std::vector<Mismatch>& mismatches() const noexcept { return mismatches_; }

 private:
  std::string tag_, message_, field_;
  std::vector<Mismatch> mismatches_;
};

/// @brief A bad argument or setting: a `c10::ValueError` (catch either) whose `field()` names the setting, e.g.
/// `window`, `step`, `border`, `border_weight`, `sigma_scale`, `custom_window`, `slicewise`, `overwrite`: the key
/// of `BlockwiseOptions` or of a quilt's constructor it is about. `what_without_backtrace()` is the message.
class ArgumentError : public c10::ValueError {
 public:
  ArgumentError(std::string field, const std::string& message, const c10::SourceLocation& where)
      : c10::ValueError(where, message), field_(std::move(field)) {}

  /// @brief The setting the error is about.
  const std::string& field() const noexcept { return field_; }

 private:
  std::string field_;
};

}  // namespace qlty

/// Checks `cond` about the setting `field`, else throws a qlty::ArgumentError whose message is the rest of the
/// arguments (as TORCH_CHECK_VALUE, plus the field).
#define QLTY_CHECK_ARG(cond, field, ...)                                                          \
  do {                                                                                            \
    if (C10_UNLIKELY(!(cond)))                                                                    \
      throw ::qlty::ArgumentError(field, ::c10::str(__VA_ARGS__),                                 \
                                  ::c10::SourceLocation{__func__, __FILE__, uint32_t(__LINE__)}); \
  } while (false)
