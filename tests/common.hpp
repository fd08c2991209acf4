#pragma once
// Shared helpers of the tests: devices, dtype names and reference implementations built from plain slicing.

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <qlty/qlty.hpp>

#include <fstream>

#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

namespace qlty_test {

using torch::indexing::Slice;

inline std::vector<torch::Device> devices() {
  std::vector<torch::Device> d{torch::kCPU};
  d.emplace_back(torch::kCUDA);  // tests skip it when CUDA is absent
  return d;
}

// Skips the calling test on a device this machine lacks (a macro: GTEST_SKIP returns from the test body).
#define QLTY_SKIP_IF_ABSENT(device) \
  if ((device).is_cuda() && !torch::cuda::is_available()) GTEST_SKIP() << "CUDA is not available"

inline std::string device_name(const testing::TestParamInfo<torch::Device>& info) {
  return info.param.is_cuda() ? "CUDA" : "CPU";
}

/// Window starts along one axis, as in docs/design/semantics.md.
inline std::vector<int64_t> starts(int64_t S, int64_t W, int64_t s) {
  std::vector<int64_t> out;
  const int64_t full = (S - W) / s;
  const int64_t times = full + 1 + (S > full * s + W ? 1 : 0);
  for (int64_t k = 0; k < times; ++k) out.push_back(std::min(k * s, S - W));
  return out;
}

/// Every window's slices in patch order (image-major, then row-major over the grid).
inline std::vector<std::vector<torch::indexing::TensorIndex>> window_slices(const std::vector<int64_t>& S,
                                                                            const std::vector<int64_t>& W,
                                                                            const std::vector<int64_t>& s) {
  std::vector<std::vector<int64_t>> st;
  for (size_t a = 0; a < S.size(); ++a) st.push_back(starts(S[a], W[a], s[a]));
  std::vector<std::vector<torch::indexing::TensorIndex>> out;
  std::vector<size_t> k(S.size(), 0);
  while (true) {
    std::vector<torch::indexing::TensorIndex> idx;
    for (size_t a = 0; a < S.size(); ++a) idx.emplace_back(Slice(st[a][k[a]], st[a][k[a]] + W[a]));
    out.push_back(idx);
    int a = static_cast<int>(S.size()) - 1;
    while (a >= 0 && ++k[a] == st[a].size()) k[a--] = 0;
    if (a < 0) break;
  }
  return out;
}

/// Stitching weight of a window: 1 inside the border on every axis, max(bw, 1e-8) elsewhere.
inline torch::Tensor reference_weight(const std::vector<int64_t>& W, const std::vector<int64_t>& b, double bw) {
  auto w = torch::full(W, std::max(bw, 1e-8), torch::kFloat64);
  std::vector<torch::indexing::TensorIndex> idx;
  for (size_t a = 0; a < W.size(); ++a) idx.emplace_back(Slice(b[a], W[a] - b[a]));
  w.index_put_(idx, 1.0);
  return w;
}

/// unstitch by slicing, one window at a time.
inline torch::Tensor reference_unstitch(const torch::Tensor& x, const std::vector<int64_t>& W,
                                        const std::vector<int64_t>& s) {
  std::vector<int64_t> S(x.sizes().begin() + 2, x.sizes().end());
  auto wins = window_slices(S, W, s);
  std::vector<torch::Tensor> parts;
  for (int64_t n = 0; n < x.size(0); ++n)
    for (auto& w : wins) {
      std::vector<torch::indexing::TensorIndex> idx{n, Slice()};
      idx.insert(idx.end(), w.begin(), w.end());
      parts.push_back(x.index(idx));
    }
  return torch::stack(parts);
}

/// (result, weights) of a stitch with the weight window `weights`, in float64, by slicing: sum(w * p) / sum(w) per
/// pixel (0 where no window reaches) and sum(w). Differentiable in the patches.
inline std::pair<torch::Tensor, torch::Tensor> reference_blend(const torch::Tensor& patches,
                                                               const std::vector<int64_t>& S,
                                                               const std::vector<int64_t>& W,
                                                               const std::vector<int64_t>& s,
                                                               const torch::Tensor& weights) {
  auto wins = window_slices(S, W, s);
  const int64_t P = static_cast<int64_t>(wins.size()), N = patches.size(0) / P, C = patches.size(1);
  auto p = patches.to(torch::kFloat64).cpu();
  auto w = weights.to(torch::kFloat64).cpu();
  std::vector<int64_t> shape{N, C};
  shape.insert(shape.end(), S.begin(), S.end());
  auto acc = torch::zeros(shape, torch::kFloat64);
  auto wsum = torch::zeros(S, torch::kFloat64);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < P; ++k) {
      std::vector<torch::indexing::TensorIndex> idx{n, Slice()};
      idx.insert(idx.end(), wins[k].begin(), wins[k].end());
      acc.index_put_(idx, acc.index(idx) + p[n * P + k] * w);
      if (n == 0) wsum.index(wins[k]).add_(w);
    }
  auto result = torch::where(wsum > 0, acc / wsum.clamp_min(1e-300), torch::zeros_like(acc));
  return {result, wsum};
}

/// (result, weights) of stitch with border weighting, in float64, by slicing.
inline std::pair<torch::Tensor, torch::Tensor> reference_stitch(const torch::Tensor& patches,
                                                                const std::vector<int64_t>& S,
                                                                const std::vector<int64_t>& W,
                                                                const std::vector<int64_t>& s,
                                                                const std::vector<int64_t>& b, double bw) {
  return reference_blend(patches, S, W, s, reference_weight(W, b, bw));
}

/// An exception's message without LibTorch's backtrace.
inline std::string message_of(const c10::Error& e) { return e.what_without_backtrace(); }
inline std::string message_of(const std::exception& e) { return e.what(); }

/// Runs f and checks it throws E with every piece of `parts` in its message.
template <typename E, typename F>
void expect_error(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected one mentioning " << parts.front();
  } catch (const E& e) {
    const std::string msg = message_of(e);
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
  }
}

/// The field() of the qlty::ArgumentError `f` throws, or "(no error)".
template <typename F>
std::string argument_field(F&& f) {
  try {
    f();
  } catch (const qlty::ArgumentError& e) {
    return e.field();
  }
  return "(no error)";
}

/// Expects a qlty::Error with `tag` whose message contains `part`.
template <typename F>
void expect_qlty_error(F&& f, const std::string& tag, const std::string& part) {
  try {
    f();
    ADD_FAILURE() << "expected qlty::Error [" << tag << "] containing \"" << part << "\"";
  } catch (const qlty::Error& e) {
    EXPECT_EQ(e.tag(), tag) << e.what();
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

/// Writes `text` to `path`, creating its folders.
inline void write_text(const std::string& path, const std::string& text) {
  qlty::detail::make_dirs(qlty::detail::parent_path(path));
  std::ofstream(path, std::ios::binary) << text;
}

/// A fresh folder under the system's temp folder (TMPDIR or /tmp), removed with its contents at the end of the test.
struct TempDir {
  std::string path;
  explicit TempDir(const std::string& tag = "qlty") {
    std::string t = (std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") + ("/" + tag + "_XXXXXX");
    path = ::mkdtemp(t.data());
  }
  ~TempDir() { qlty::detail::remove_tree(path); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};

}  // namespace qlty_test
