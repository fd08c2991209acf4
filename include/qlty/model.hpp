#pragma once
/// @file model.hpp
/// @brief A network loaded from a file and called as a `BlockModel`: TorchScript (`torch.jit.save`) or an
/// AOTInductor package (`torch.export` + `torch._inductor.aoti_compile_and_package`, `.pt2`; LibTorch >= 2.6).
///
/// ```cpp
/// auto model = qlty::Model::load("unet.pt2", torch::kCUDA);   // or "unet.pt" (TorchScript)
/// qlty::infer_blockwise(model, input, "prediction.zarr", options);
/// ```
///
/// An AOTInductor package is compiled for fixed input shapes, with at most some dimensions dynamic (typically
/// the batch, within bounds). `Model` feeds it batches it accepts: a batch too large is split, one too small is
/// filled up with copies of its last window (their outputs are dropped), so a blockwise run's batch size and the
/// package's batch need not agree. qlty learns the accepted batch sizes from the package's own input checks
/// (AOTInductor's `AOTI_RUNTIME_CHECK_INPUTS`, which `Model` switches on: without it a package reads out of
/// bounds on a shape it was not compiled for); a window shape or dtype the package does not take is an error
/// naming both shapes.

#include <qlty/error.hpp>
#include <qlty/support/fs.hpp>
#include <qlty/support/torch_compat.hpp>

#include <torch/script.h>
#include <torch/torch.h>
#if QLTY_HAS_AOTI
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#endif

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <limits>
#include <memory>
#include <mutex>
#include <regex>
#include <set>
#include <string>
#include <vector>

namespace qlty {

namespace detail {

/// Whether `file` is an AOTInductor package: named .pt2, or a zip whose directory (at its end) lists
/// `data/aotinductor/` (TorchScript files are zips too, with `code/` and `data.pkl`).
inline bool is_aoti_package(const std::string& file) {
  if (file.size() >= 4 && file.compare(file.size() - 4, 4, ".pt2") == 0) return true;
  auto tail = read_file_end(file, 1 << 16, true);
  static const std::string marker = "/data/aotinductor/";
  return tail && std::search(tail->begin(), tail->end(), marker.begin(), marker.end()) != tail->end();
}

/// Why torch::jit::load refused `file`: a file written by torch.save (a pickle, in a zip or not) gets a message
/// that says how to export the model instead.
inline std::string explain_torchscript_failure(const std::string& file, const std::string& what) {
  const auto head_bytes = read_file_end(file, 4, false);
  const std::string head = head_bytes ? std::string(head_bytes->begin(), head_bytes->end()) : std::string();
  const auto tail = read_file_end(file, 1 << 16, true);
  auto holds = [&](const char* s) {
    return tail && std::search(tail->begin(), tail->end(), s, s + std::strlen(s)) != tail->end();
  };
  const bool zip_pickle = head == std::string("PK\x03\x04", 4) && holds("data.pkl") && !holds("constants.pkl");
  const bool old_pickle = !head.empty() && static_cast<unsigned char>(head[0]) == 0x80;
  if (zip_pickle || old_pickle)
    return file +
           ": this file was written by torch.save (a pickled model or state_dict), not torch.jit.save; qlty runs "
           "TorchScript models and AOTInductor packages. In Python: m = torch.jit.script(model) (or "
           "torch.jit.trace(model, example_input)); torch.jit.save(m, \"model.pt\"); or see docs/usage.md for "
           "torch.export + aoti_compile_and_package";
  return file + ": not a TorchScript model this LibTorch can load: " + what;
}

/// The prediction in what a TorchScript model returns: a tensor, the first element of a tuple or list (deep
/// supervision: the full-resolution head), or the entry `key` of a dict (the first tensor entry when no key).
inline torch::Tensor pick_output(const c10::IValue& v, const std::string& key) {
  auto bad = [&](const std::string& why) { throw Error("model", "the model's output: " + why); };
  if (v.isTensor()) {
    if (!key.empty()) bad("output key \"" + key + "\" was given, but the model returns a tensor, not a dict");
    return v.toTensor();
  }
  if (v.isTuple() || v.isList()) {
    if (!key.empty()) bad("output key \"" + key + "\" was given, but the model returns a tuple or list, not a dict");
    const auto items = v.isTuple() ? v.toTupleRef().elements().vec() : v.toList().vec();
    if (items.empty() || !items[0].isTensor())
      bad("the model returns a tuple or list whose first element is not a tensor (" +
          (items.empty() ? std::string("it is empty") : items[0].tagKind()) + ")");
    return items[0].toTensor();
  }
  if (v.isGenericDict()) {
    const auto d = v.toGenericDict();
    std::string keys;
    for (const auto& e : d) keys += (keys.empty() ? "" : ", ") + (e.key().isString() ? e.key().toStringRef() : "?");
    for (const auto& e : d)
      if ((key.empty() || (e.key().isString() && e.key().toStringRef() == key)) && e.value().isTensor())
        return e.value().toTensor();
    bad(key.empty() ? "the model returns a dict without a tensor entry (keys: " + keys + ")"
                    : "the model returns a dict without the key \"" + key + "\" (keys: " + keys + ")");
  }
  bad("the model returns " + v.tagKind() + ", not a tensor, a tuple, a list or a dict of tensors");
  return {};
}

#if QLTY_HAS_AOTI
/// What a process writes to its standard error (file descriptor 2) while one of these lives: AOTInductor's
/// runtime prints the input check that failed there, and qlty reads it back instead of showing it.
class CapturedStderr {
 public:
  CapturedStderr() {
    std::fflush(stderr);
    std::cerr.flush();
    file_ = std::tmpfile();
    if (file_) saved_ = ::dup(2);
    if (saved_ >= 0) ::dup2(::fileno(file_), 2);
  }
  ~CapturedStderr() {
    restore();
    if (file_) std::fclose(file_);
  }
  CapturedStderr(const CapturedStderr&) = delete;
  CapturedStderr& operator=(const CapturedStderr&) = delete;

  /// Restores standard error and returns what was written to it meanwhile.
  std::string text() {
    restore();
    std::string s;
    if (!file_) return s;
    std::fflush(file_);
    std::rewind(file_);
    char buf[4096];
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, file_)) > 0;) s.append(buf, n);
    return s;
  }

 private:
  void restore() {
    if (saved_ < 0) return;
    std::fflush(stderr);
    std::cerr.flush();
    ::dup2(saved_, 2);
    ::close(saved_);
    saved_ = -1;
  }
  std::FILE* file_ = nullptr;
  int saved_ = -1;
};

/// An AOTInductor package, fed batches it accepts (see model.hpp).
class AotiPackage {
 public:
  AotiPackage(const std::string& file, const torch::Device& device) : file_(file) {
    // The package's generated input checks read this once, at its first call: on, a wrong shape is an error
    // rather than an out-of-bounds read.
    ::setenv("AOTI_RUNTIME_CHECK_INPUTS", "1", 1);
    try {
      loader_ = std::make_unique<torch::inductor::AOTIModelPackageLoader>(
          file, "model", false, 1, device.is_cuda() ? device.index() : c10::DeviceIndex(-1));
    } catch (const c10::Error& e) {
      throw Error("model", file + ": not an AOTInductor package this LibTorch (" TORCH_VERSION ") can load: " +
                               e.what_without_backtrace());
    }
    const auto meta = loader_->get_metadata();
    const auto key = meta.find("AOTI_DEVICE_KEY");
    package_device_ = key == meta.end() ? "cpu" : key->second;
    const std::string wanted = device.is_cuda()  ? "cuda"
                               : device.is_cpu() ? "cpu"
                                                 : c10::DeviceTypeName(device.type(), true);
    if (package_device_ != wanted)
      throw Error("model", file + ": the package was compiled for " + package_device_ + ", not for " + wanted +
                               " (the device it runs on); export it with the model and example input on " + wanted);
  }

  /// The package on windows `x` (B, C, *W), in batches it accepts.
  torch::Tensor operator()(const torch::Tensor& x) {
    std::lock_guard<std::mutex> guard(mutex_);
    for (int attempt = 0;; ++attempt) {
      try {
        return run_batches(x.contiguous());
      } catch (const BatchRefused& r) {
        if (attempt == 3 || !learn(r.message)) throw refused(x, r.message);
      }
    }
  }

  /// The batch sizes the package is known to accept: [lo, hi] (hi = INT64_MAX while unknown).
  std::pair<int64_t, int64_t> batch_bounds() const { return {lo_, hi_}; }

 private:
  struct BatchRefused {
    std::string message;
  };

  torch::Tensor run_batches(const torch::Tensor& x) {
    const int64_t B = x.size(0);
    std::vector<torch::Tensor> out;
    for (int64_t b0 = 0; b0 < B; b0 += hi_) {
      const int64_t n = std::min(hi_, B - b0);
      auto chunk = x.narrow(0, b0, n);
      if (n < lo_) {  // filled up with copies of the last window
        auto fill = chunk.sizes().vec();
        fill[0] = lo_ - n;
        chunk = torch::cat({chunk, chunk.narrow(0, n - 1, 1).expand(fill)});
      }
      auto y = run_once(chunk);
      out.push_back(n < lo_ ? y.narrow(0, 0, n) : y);
    }
    return out.size() == 1 ? out[0] : torch::cat(out);
  }

  torch::Tensor run_once(const torch::Tensor& chunk) {
    const int64_t n = chunk.size(0);
    std::vector<torch::Tensor> outputs;
    if (accepted_.count(n)) {
      outputs = loader_->run({chunk});
    } else {  // a batch size not seen yet: the package's input check may refuse it, on stderr
      CapturedStderr captured;
      try {
        outputs = loader_->run({chunk});
      } catch (const std::exception& e) {
        const auto* c10e = dynamic_cast<const c10::Error*>(&e);
        throw BatchRefused{captured.text() + "\n" + (c10e ? c10e->what_without_backtrace() : e.what())};
      }
      const auto text = captured.text();
      if (!text.empty()) std::cerr << text;  // the package's own output, passed on
      accepted_.insert(n);
    }
    if (outputs.empty() || !outputs[0].defined())
      throw Error("model", file_ + ": the AOTInductor package returned no tensor");
    return outputs[0];
  }

  /// Narrows the accepted batch sizes from a refusal of the package's input check; false when it is about
  /// something else than the batch (or teaches nothing new).
  bool learn(const std::string& m) {
    std::smatch s;
    const auto lo = lo_, hi = hi_;
    if (std::regex_search(m, s, std::regex(R"(unmatched dim value at 0, expected: (\d+))")))
      lo_ = hi_ = std::stoll(s[1]);
    else if (std::regex_search(m, s, std::regex(R"(too small at 0, expected it to be >= (\d+))")))
      lo_ = std::stoll(s[1]);
    else if (std::regex_search(m, s, std::regex(R"(too large at 0, expected to be <= (\d+))")))
      hi_ = std::stoll(s[1]);
    lo_ = std::max<int64_t>(lo_, 1);
    hi_ = std::max(hi_, lo_);
    return lo_ != lo || hi_ != hi;
  }

  Error refused(const torch::Tensor& x, const std::string& message) const {
    std::string line;  // the check that failed, e.g. "input_handles[0]: unmatched dim value at 2, expected: 32, ..."
    std::smatch s;
    if (std::regex_search(message, s, std::regex(R"((input_handles\[\d+\]: [^\n]*))"))) line = s[1];
    std::string why = line.empty() ? message : line;
    while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
    std::string hint;
    if (line.find("dtype") != std::string::npos)
      hint = "; the package takes another dtype than " + std::string(c10::toString(x.scalar_type())) +
             " (--precision must match the dtype it was exported with)";
    else if (line.find("dim value") != std::string::npos)
      hint =
          "; export the model with example windows of this shape, or with dynamic dimensions "
          "(torch.export.Dim), or choose windows of the shape it was exported with";
    return Error("model", file_ + ": the AOTInductor package does not take windows of shape " + c10::str(x.sizes()) +
                              " (" + c10::toString(x.scalar_type()) + "): " + why + hint);
  }

  std::string file_, package_device_;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader_;
  std::mutex mutex_;
  std::set<int64_t> accepted_;
  int64_t lo_ = 1, hi_ = std::numeric_limits<int64_t>::max();
};
#endif

}  // namespace detail

/// @brief A network from a file, called on a batch of windows: a `BlockModel`.
class Model {
 public:
  enum class Format { TorchScript, AOTInductor };

  /// @brief Loads `file` to run on `device`: an AOTInductor package when it is one (named `.pt2`, or a zip
  /// holding `data/aotinductor/`), TorchScript otherwise. `output_key` picks the entry of a TorchScript model's
  /// dict output (the first tensor entry when empty). Throws qlty::Error (tag `model`) with what to do instead
  /// for files written by torch.save, packages on a LibTorch older than 2.6, and packages compiled for another
  /// device.
  static Model load(const std::string& file, const torch::Device& device, const std::string& output_key = "") {
    Model m;
    if (detail::is_aoti_package(file)) {
      if (!output_key.empty())
        throw Error("model", file + ": an output key (\"" + output_key +
                                 "\") picks an entry of a TorchScript model's dict; an AOTInductor package returns "
                                 "its outputs flattened, and qlty takes the first");
#if QLTY_HAS_AOTI
      m.format_ = Format::AOTInductor;
      m.package_ = std::make_shared<detail::AotiPackage>(file, device);
#else
      throw Error("model", file +
                               ": an AOTInductor package (torch.export + aoti_compile_and_package) loads with "
                               "LibTorch 2.6 or newer; this program was built with LibTorch " TORCH_VERSION
                               ". Build qlty against a newer LibTorch (QLTY_LIBTORCH=pip ./scripts/build.sh), "
                               "or export the model as TorchScript (torch.jit.script + torch.jit.save)");
#endif
      return m;
    }
    m.format_ = Format::TorchScript;
    m.script_ = std::make_shared<torch::jit::Module>();
    try {
      *m.script_ = torch::jit::load(file, device);
    } catch (const c10::Error& e) {
      throw Error("model", detail::explain_torchscript_failure(file, e.what_without_backtrace()));
    }
    m.script_->eval();
    m.key_ = output_key;
    return m;
  }

  /// @brief The prediction for `x` (B, C, *W).
  torch::Tensor operator()(const torch::Tensor& x) const {
#if QLTY_HAS_AOTI
    if (package_) return (*package_)(x);
#endif
    return detail::pick_output(script_->forward({x}), key_);
  }

  /// @brief Casts a TorchScript model's parameters (for a precision other than float32 off CUDA, where there is
  /// no autocast). An AOTInductor package keeps the dtype it was compiled for.
  void to(torch::ScalarType dtype) {
    if (script_) script_->to(dtype);
  }

  Format format() const { return format_; }

 private:
  Model() = default;
  Format format_ = Format::TorchScript;
  std::shared_ptr<torch::jit::Module> script_;
  std::string key_;
#if QLTY_HAS_AOTI
  std::shared_ptr<detail::AotiPackage> package_;
#endif
};

}  // namespace qlty
