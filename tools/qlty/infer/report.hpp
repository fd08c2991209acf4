#pragma once
// What `qlty infer` shows: a progress bar, the summary of a run, and the PNG preview of its output.

#include <qlty/blockwise.hpp>

#include "options.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>

namespace qlty::tool {

/// Prints a progress bar to a terminal (stderr), at most ten times a second; with `lines` and no terminal (the
/// output of an MPI rank, a batch job's log), a line every ten seconds and at the end instead.
class ProgressBar {
 public:
  explicit ProgressBar(bool enabled, bool lines = false)
      : enabled_(enabled && (::isatty(2) || lines)), lines_(enabled && lines && !::isatty(2)) {}
  void operator()(const qlty::BlockwiseProgress& p) {
    if (!enabled_) return;
    const auto now = std::chrono::steady_clock::now();
    const bool last = p.blocks_done == p.blocks_total;
    if (!last && now - shown_ < std::chrono::milliseconds(lines_ ? 10000 : 100)) return;
    if (lines_ && last && finished_) return;
    shown_ = now;
    finished_ = last;
    // Ranks that meet in a column may both compute a few windows: done can pass planned.
    const double frac = p.windows_planned ? std::min(1.0, double(p.windows_done) / double(p.windows_planned)) : 1.0;
    const double rate = p.seconds > 0 ? double(p.windows_done) / p.seconds : 0.0;
    const int width = 30, filled = static_cast<int>(frac * width);
    std::string bar(filled, '#');
    bar.append(width - filled, ' ');
    std::string eta = "--";
    if (rate > 0 && frac < 1) eta = duration(double(p.windows_planned - p.windows_done) / rate);
    std::fprintf(stderr, "%s%3d%% |%s| %lld/%lld windows, %.1f windows/s, ETA %s, blocks %lld/%lld%s",
                 lines_ ? "qlty infer: " : "\r", static_cast<int>(frac * 100), bar.c_str(),
                 static_cast<long long>(p.windows_done), static_cast<long long>(p.windows_planned), rate, eta.c_str(),
                 static_cast<long long>(p.blocks_done), static_cast<long long>(p.blocks_total), lines_ ? "\n" : "   ");
    drawn_ = !lines_;
  }
  void finish() {
    if (drawn_) std::fprintf(stderr, "\n");
    drawn_ = false;
  }
  static std::string duration(double s) {
    char b[32];
    if (s < 60)
      std::snprintf(b, sizeof b, "%.0fs", s);
    else if (s < 3600)
      std::snprintf(b, sizeof b, "%dm%02ds", int(s) / 60, int(s) % 60);
    else
      std::snprintf(b, sizeof b, "%dh%02dm", int(s) / 3600, int(s) % 3600 / 60);
    return b;
  }

 private:
  bool enabled_, lines_, drawn_ = false, finished_ = false;
  std::chrono::steady_clock::time_point shown_{};
};

/// The summary lines of a run (and what to do next when it is not complete).
void print_summary(const InferArgs& a, const BlockInput& input, const BlockwiseSummary& s, const BlockwiseOptions& o);

/// A middle slice (or the image) of input channel 0, output channels 0-2 and std channel 0 of image 0, side by side.
void write_preview(const std::string& png, const qlty::BlockInput& input, const std::string& output, bool with_std);

}  // namespace qlty::tool
