#pragma once
/// @file kernels.hpp
/// @brief Differentiable unfold (windows -> patches) and fold (patches -> weighted images) on any device.
///
/// These are the building blocks of the quilts; most users call NCYXQuilt / NCZYXQuilt instead. Tensors here are
/// five-dimensional (N, C, Z, Y, X); 2D quilts use Z = 1.

#include <ATen/MemoryOverlap.h>
#include <torch/torch.h>

#include <initializer_list>
#include <tuple>

#include <qlty/geometry.hpp>
#include <qlty/kernels/cpu.hpp>
#include <qlty/kernels/torch.hpp>
#include <qlty/memory.hpp>

namespace qlty {

/// @brief Which implementation runs: `Native` (multithreaded CPU kernels), `Torch` (vectorised torch ops, any
/// device) or `Auto` (Native on CPU, Torch elsewhere). The Python original's `use_numba=True` is `Native`.
enum class Backend { Auto, Native, Torch };

namespace detail {

inline bool use_native(const torch::Tensor& t, Backend b, const char* who) {
  TORCH_CHECK_VALUE(b != Backend::Native || t.device().is_cpu(), who,
                    ": Backend::Native runs on CPU tensors only, got a tensor on ", t.device(),
                    " (use Backend::Auto or Backend::Torch)");
  return b == Backend::Native || (b == Backend::Auto && t.device().is_cpu());
}

inline torch::ScalarType accumulate_type(torch::ScalarType t) {
  return t == torch::kDouble ? torch::kDouble : torch::kFloat;
}

/// Checks that the output argument `arg` of an `_out` call `who` shares no memory with `others`. An output that
/// is resized must be checked after the resize: a view that grows can reach into an input's memory.
inline void check_no_overlap(const char* who, const char* arg, const torch::Tensor& out,
                             std::initializer_list<std::pair<const char*, const torch::Tensor*>> others) {
  for (const auto& [name, t] : others) {
    if (!t->defined()) continue;
    const auto status = at::get_overlap_status(out, *t);
    TORCH_CHECK_VALUE(status == at::MemOverlapStatus::No, who, ": ", arg, " must not share memory with ", name,
                      status == at::MemOverlapStatus::TooHard ? " (they share a storage)" : "");
  }
}

/// Checks the output argument `arg` of an `_out` call `who`: defined, of the given shape, dtype and device,
/// contiguous, sharing no memory with `others` (inputs and the other outputs), and no autograd: like LibTorch's
/// own `_out` functions, these calls write in place and record no graph.
inline void check_out(const char* who, const char* arg, const torch::Tensor& out, c10::IntArrayRef sizes,
                      c10::ScalarType dtype, const c10::Device& device,
                      std::initializer_list<std::pair<const char*, const torch::Tensor*>> others) {
  TORCH_CHECK_VALUE(out.defined(), who, ": ", arg, " must be a defined tensor of shape ", sizes);
  TORCH_CHECK_VALUE(out.sizes() == sizes, who, ": ", arg, " must have shape ", sizes, ", got ", out.sizes());
  TORCH_CHECK_TYPE(out.scalar_type() == dtype, who, ": ", arg, " must have dtype ", dtype, ", got ", out.scalar_type());
  TORCH_CHECK_VALUE(out.device() == device, who, ": ", arg, " must be on ", device, ", got ", out.device());
  TORCH_CHECK_VALUE(out.is_contiguous(), who, ": ", arg, " must be contiguous, got strides ", out.strides(),
                    " (allocate it with torch::empty of that shape)");
  const bool grad = torch::GradMode::is_enabled();
  TORCH_CHECK_VALUE(!(grad && out.requires_grad()), who, ": ", arg,
                    " requires grad; _out calls do not support autograd (use the allocating call, or run under "
                    "torch::NoGradGuard)");
  for (const auto& [name, t] : others) {
    if (!t->defined()) continue;
    TORCH_CHECK_VALUE(!(grad && t->requires_grad()), who, ": ", name,
                      " requires grad; _out calls do not support autograd (use the allocating call, or run under "
                      "torch::NoGradGuard)");
  }
  check_no_overlap(who, arg, out, others);
}

/// patches (N * P, C, Wz, Wy, Wx) from x (N, C, Sz, Sy, Sx); `weighted` multiplies by the stitching weights.
inline torch::Tensor unfold_raw(const torch::Tensor& x, const Grid3& g, bool weighted, Backend b) {
  auto out = empty_output({x.size(0) * g.per_image(), x.size(1), g.window[0], g.window[1], g.window[2]},
                          x.options().requires_grad(false));
  if (out.numel() == 0) return out;
  if (use_native(x, b, "qlty::unfold"))
    unfold_cpu(x, out, g, weighted);
  else
    unfold_torch(x, out, g, weighted);
  return out;
}

/// (images (N, C, Sz, Sy, Sx), weight sum (Sz, Sy, Sx)) from floating patches (N * P, C, Wz, Wy, Wx).
inline std::tuple<torch::Tensor, torch::Tensor> fold_raw(const torch::Tensor& patches, const Grid3& g, bool weighted,
                                                         bool normalize, Backend b) {
  const int64_t N = patches.size(0) / g.per_image();
  auto out =
      empty_output({N, patches.size(1), g.shape[0], g.shape[1], g.shape[2]}, patches.options().requires_grad(false));
  auto wsum = torch::empty({g.shape[0], g.shape[1], g.shape[2]},
                           patches.options().dtype(accumulate_type(patches.scalar_type())));
  if (use_native(patches, b, "qlty::fold"))
    fold_cpu(patches, out, wsum, g, weighted, normalize);
  else
    fold_torch(patches, out, wsum, g, weighted, normalize);
  return {out, wsum};
}

// Autograd: unfold and fold are adjoint. d(unfold)^T = unweighted fold; d(weighted, normalised fold)^T =
// weighted unfold of (grad / wsum).
struct UnfoldFunction : torch::autograd::Function<UnfoldFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const Grid3& g,
                               Backend b) {
    ctx->saved_data["grid"] = g.pack();
    ctx->saved_data["backend"] = static_cast<int64_t>(b);
    return unfold_raw(x, g, false, b);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const Grid3 g = Grid3::unpack(ctx->saved_data["grid"].toIntVector(), 1.0);
    const auto b = static_cast<Backend>(ctx->saved_data["backend"].toInt());
    auto grad = std::get<0>(fold_raw(grads[0], g, false, false, b));
    return {grad, torch::Tensor(), torch::Tensor()};
  }
};

struct FoldFunction : torch::autograd::Function<FoldFunction> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& patches,
                                                const Grid3& g, Backend b) {
    ctx->saved_data["grid"] = g.pack();
    ctx->saved_data["border_weight"] = g.border_weight;
    if (g.weights) ctx->saved_data["weights"] = std::vector<double>(*g.weights);
    ctx->saved_data["backend"] = static_cast<int64_t>(b);
    auto [out, wsum] = fold_raw(patches, g, true, true, b);
    ctx->save_for_backward({wsum});
    ctx->mark_non_differentiable({wsum});
    return {out, wsum};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    Grid3 g = Grid3::unpack(ctx->saved_data["grid"].toIntVector(), ctx->saved_data["border_weight"].toDouble());
    if (ctx->saved_data.count("weights"))
      g.weights = std::make_shared<const std::vector<double>>(ctx->saved_data["weights"].toDoubleVector());
    const auto b = static_cast<Backend>(ctx->saved_data["backend"].toInt());
    const auto wsum = ctx->get_saved_variables()[0];
    torch::Tensor grad = grads[0];
    if (!grad.defined()) return {torch::Tensor(), torch::Tensor(), torch::Tensor()};
    auto scaled = grad.to(wsum.scalar_type()).div(wsum.clamp_min(1e-30)).to(grad.scalar_type());
    return {unfold_raw(scaled, g, true, b), torch::Tensor(), torch::Tensor()};
  }
};

/// Windows at arbitrary origins; backward adds each window's gradient back at its origin.
struct GatherFunction : torch::autograd::Function<GatherFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& origins, const std::array<int64_t, 3>& window) {
    ctx->saved_data["shape"] = x.sizes().vec();
    ctx->save_for_backward({origins});
    return gather_raw(x, origins, window);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto origins = ctx->get_saved_variables()[0];
    if (!grads[0].defined()) return {torch::Tensor(), torch::Tensor(), torch::Tensor()};
    auto shape = ctx->saved_data["shape"].toIntVector();
    return {scatter_add_torch(grads[0], origins.to(grads[0].device()), shape), torch::Tensor(), torch::Tensor()};
  }
  static torch::Tensor gather_raw(const torch::Tensor& x, const torch::Tensor& origins,
                                  const std::array<int64_t, 3>& window) {
    auto out = empty_output({origins.size(0), x.size(1), window[0], window[1], window[2]}, x.options());
    gather_into(x, origins, window, out);
    return out;
  }
  /// Into `out` (M, C, *window), contiguous, preallocated.
  static void gather_into(const torch::Tensor& x, const torch::Tensor& origins, const std::array<int64_t, 3>& window,
                          torch::Tensor& out) {
    if (out.numel() == 0) return;
    if (x.device().is_cpu())
      gather_cpu(x, origins.to(torch::kCPU).contiguous(), out, window);
    else
      gather_torch(x, origins.to(x.device()), out, window);
  }
};

}  // namespace detail

namespace detail {
/// gather_windows's arguments: x 5-D, origins (M, 4) integers, windows of at least one pixel, every window inside x
/// (the kernels copy rows without bounds checks).
inline void check_windows_inside(const char* who, const torch::Tensor& x, const torch::Tensor& origins,
                                 const std::array<int64_t, 3>& window) {
  TORCH_CHECK_VALUE(x.dim() == 5, who, ": x must be 5-D (N, C, Z, Y, X), got shape ", x.sizes());
  TORCH_CHECK_VALUE(origins.dim() == 2 && origins.size(1) == 4, who,
                    ": origins must be (M, 4) rows {n, z, y, x}, got shape ", origins.sizes());
  TORCH_CHECK_TYPE(!origins.is_floating_point() && !origins.is_complex() && origins.scalar_type() != torch::kBool, who,
                   ": origins must be integers, got ", origins.scalar_type());
  for (int a = 0; a < 3; ++a)
    TORCH_CHECK_VALUE(window[a] >= 1 && window[a] <= x.size(2 + a), who, ": window ", c10::IntArrayRef(window),
                      " must be >= 1 and fit in x of shape ", x.sizes());
  if (origins.size(0) == 0) return;
  const auto o = origins.to(torch::kCPU, torch::kLong).contiguous();
  const auto low = torch::tensor({int64_t(0), int64_t(0), int64_t(0), int64_t(0)});
  const auto high = torch::tensor({x.size(0) - 1, x.size(2) - window[0], x.size(3) - window[1], x.size(4) - window[2]});
  const auto outside = (o < low).logical_or(o > high).any(1).nonzero();
  if (outside.size(0) == 0) return;
  const int64_t i = outside[0][0].item<int64_t>();
  const int64_t* row = o.data_ptr<int64_t>() + 4 * i;
  TORCH_CHECK_VALUE(false, who, ": the window of origins row ", i, " ", c10::IntArrayRef(row, 4),
                    " does not lie inside x of shape ", x.sizes(), " (window ", c10::IntArrayRef(window),
                    "; rows {n, z, y, x} with n < N and ", "0 <= z <= Z - Wz, and so on)");
}
}  // namespace detail

/// @brief Windows (M, C, Wz, Wy, Wx) of x (N, C, Z, Y, X) at origins (M, 4) integer rows {n, z, y, x}; any dtype
/// and device, differentiable. Every window must lie inside x (checked: an error names the first row that does
/// not).
inline torch::Tensor gather_windows(const torch::Tensor& x, const torch::Tensor& origins,
                                    const std::array<int64_t, 3>& window) {
  detail::check_windows_inside("qlty::gather_windows", x, origins, window);
  if (x.requires_grad() && torch::GradMode::is_enabled()) return detail::GatherFunction::apply(x, origins, window);
  return detail::GatherFunction::gather_raw(x, origins, window);
}

/// @brief Windows of x (N, C, Z, Y, X) as patches (N * P, C, Wz, Wy, Wx); differentiable, any dtype and device.
inline torch::Tensor unfold(const torch::Tensor& x, const detail::Grid3& g, Backend b = Backend::Auto) {
  if (x.requires_grad() && torch::GradMode::is_enabled()) return detail::UnfoldFunction::apply(x, g, b);
  return detail::unfold_raw(x, g, false, b);
}

namespace detail {
/// Marks `t` as written in place, as LibTorch's own `_out` functions do: autograd then refuses a backward pass
/// that needs the values `t` held before (instead of silently using the new ones).
inline void mark_written(const torch::Tensor& t) {
  if (t.defined()) t.unsafeGetTensorImpl()->bump_version();
}
}  // namespace detail

/// @brief unfold into `out` (N * P, C, Wz, Wy, Wx), a contiguous tensor of x's dtype and device that shares no
/// memory with x: no allocation, no autograd (checked). Shapes are checked by the callers (the quilts).
inline torch::Tensor& unfold_out(const torch::Tensor& x, torch::Tensor& out, const detail::Grid3& g,
                                 Backend b = Backend::Auto) {
  detail::mark_written(out);
  if (out.numel() == 0) return out;
  if (detail::use_native(x, b, "qlty::unfold_out"))
    detail::unfold_cpu(x, out, g, false);
  else
    detail::unfold_torch(x, out, g, false);
  return out;
}

/// @brief fold into `out` (N, C, Z, Y, X) and `wsum` (Z, Y, X): contiguous, of the patches' dtype and its
/// accumulation dtype (float32, float64 for double), no autograd. Checked by the callers.
inline void fold_out(const torch::Tensor& patches, torch::Tensor& out, torch::Tensor& wsum, const detail::Grid3& g,
                     Backend b = Backend::Auto) {
  detail::mark_written(out);
  detail::mark_written(wsum);
  if (detail::use_native(patches, b, "qlty::fold_out"))
    detail::fold_cpu(patches, out, wsum, g, true, true);
  else
    detail::fold_torch(patches, out, wsum, g, true, true);
}

/// @brief (weighted mean image (N, C, Z, Y, X), weight sum (Z, Y, X)) from floating patches; differentiable.
inline std::tuple<torch::Tensor, torch::Tensor> fold(const torch::Tensor& patches, const detail::Grid3& g,
                                                     Backend b = Backend::Auto) {
  if (patches.requires_grad() && torch::GradMode::is_enabled()) {
    auto r = detail::FoldFunction::apply(patches, g, b);
    return {r[0], r[1]};
  }
  return detail::fold_raw(patches, g, true, true, b);
}

}  // namespace qlty
