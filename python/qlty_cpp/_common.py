"""What the quilt classes share: the original qlty's argument rules (border, border_weight, window and step as
tuples), the blend keywords of qlty for C++, and the positions of patches."""

from __future__ import annotations

import torch

from . import _C

BLEND_DOC = """
    Extensions of qlty for C++ (keyword only):
        blend: "border" (qlty's border weighting, the default), "constant", "gaussian" or "custom"
        sigma_scale: gaussian blend, sigma = sigma_scale * window per axis (default 0.125, as MONAI and nnU-Net)
        custom_window: custom blend, a tensor of the window's shape
        pad: "none" (the default: images smaller than the window are refused), "constant", "reflect", "replicate"
        pad_value: the value of "constant" padding
"""


def normalize_border(border, ndim: int):
    """qlty's rule: None, 0 or all zeros mean no border; an int is the border on every axis; a tuple has ndim
    entries. Returns a tuple, or None for no border."""
    if border is None:
        return None
    if isinstance(border, bool) or not isinstance(border, (int, tuple, list)):
        raise TypeError(f"border must be int, tuple, or None, got {type(border)}")
    if isinstance(border, int):
        return None if border == 0 else (border,) * ndim
    border = tuple(int(b) for b in border)
    if all(b == 0 for b in border):
        return None
    if len(border) != ndim:
        raise ValueError(f"border tuple must have {ndim} elements for {ndim}D data, got {len(border)}")
    return border


def validate_border_weight(border_weight: float) -> float:
    """qlty's rule: in [0, 1]; 0 counts as 1e-8 (a border pixel is never weighted exactly zero)."""
    if not (0.0 <= border_weight <= 1.0):
        raise ValueError(f"border_weight must be in [0.0, 1.0], got {border_weight}")
    return max(float(border_weight), 1e-8)


def per_axis(value, ndim: int, name: str) -> tuple:
    """An int, or a tuple / list of ndim ints, as a tuple of ndim ints."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a tuple of {ndim} ints, got {value!r}")
    if isinstance(value, int):
        return (value,) * ndim
    try:
        values = tuple(int(v) for v in value)
    except TypeError:
        raise TypeError(f"{name} must be an int or a tuple of {ndim} ints, got {value!r}") from None
    if len(values) != ndim:
        raise ValueError(f"{name} must have {ndim} entries for {ndim}D data, got {len(values)}: {value!r}")
    return values


def blend_kwargs(border, border_weight, blend="border", sigma_scale=0.125, custom_window=None, pad="none",
                 pad_value=0.0) -> dict:
    """The blend and pad keywords of the extension's quilt constructors."""
    if isinstance(sigma_scale, (int, float)):
        sigma_scale = [float(sigma_scale)]
    return dict(blend=blend, border=list(border) if border else [0], border_weight=border_weight,
                sigma_scale=list(sigma_scale), custom_window=custom_window, pad=pad, pad_value=pad_value)


def check_position_mode(position_mode: str) -> bool:
    """True for "relative", False for "absolute"; anything else is a ValueError."""
    if position_mode not in ("absolute", "relative"):
        raise ValueError(f"position_mode must be 'absolute' or 'relative', got {position_mode!r}")
    return position_mode == "relative"


def window_origin(index: int, shape, window, step, times, padded: bool = False) -> tuple:
    """(n, *origin) of patch `index` of a quilt: image index // prod(times), window in row-major order. A padding
    quilt's windows run over the image padded to the window (floor(d / 2) before it), so origins can be negative."""
    per_image = 1
    for t in times:
        per_image *= t
    n, w = divmod(index, per_image)
    origin = []
    for a in reversed(range(len(times))):
        w, k = divmod(w, times[a])
        size = max(shape[a], window[a]) if padded else shape[a]
        origin.append(min(k * step[a], size - window[a]) - (size - shape[a]) // 2)
    return (n, *reversed(origin))


class OriginalAttributes:
    """The attributes the original's quilts carry: the sizes by axis name (Y, X or Z, Y, X), window, step, border
    (normalised, None for none), border_weight (validated), and after _set_times the window counts nY, nX (nZ)."""

    _ndim = 2
    _axes = ("Y", "X")

    def _set_geometry(self, sizes, window, step, border, border_weight):
        for name, size in zip(self._axes, sizes):
            setattr(self, name, size)
        self.window = window
        self.step = step
        self.border = normalize_border(border, self._ndim)
        self.border_weight = validate_border_weight(border_weight)

    def _set_times(self, times):
        for name, count in zip(("n" + a for a in self._axes), times):
            setattr(self, name, count)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{a}={getattr(self, a)}" for a in self._axes)
        first = f"filename={self.filename!r}, N={self.N}, " if hasattr(self, "filename") else ""
        return (f"{type(self).__name__}({first}{sizes}, window={self.window}, step={self.step}, "
                f"border={self.border}, border_weight={self.border_weight})")


class QuiltBase(OriginalAttributes):
    """NCYXQuilt and NCZYXQuilt: the original's attributes and calls over the extension's quilt."""

    def _setup(self, sizes, window, step, border, border_weight, extensions):
        self._set_geometry(sizes, window, step, border, border_weight)
        quilt_type = _C.Quilt2D if self._ndim == 2 else _C.Quilt3D
        self._quilt = quilt_type(
            list(sizes), list(per_axis(window, self._ndim, "window")), list(per_axis(step, self._ndim, "step")),
            **blend_kwargs(self.border, border_weight, **extensions))
        self._set_times(self._quilt.get_times())
        self.weight = self._quilt.weights()

    def border_tensor(self) -> torch.Tensor:
        """float32 of the window's shape: 1 inside the border, 0 on it (all ones without a border)."""
        return self._quilt.border_tensor()

    def get_times(self) -> tuple:
        """Windows per spatial axis."""
        return tuple(self._quilt.get_times())

    def unstitch(self, tensor: torch.Tensor, return_positions: bool = False, include_n_position: bool = False,
                 add_positional_channels: bool = False, normalize_positions: bool = True,
                 position_mode: str = "absolute"):
        """Patches (N * P, C, *window) of tensor (N, C, *shape), any dtype, differentiable; with
        add_positional_channels, each pixel's coordinates appended as channels; with return_positions, also the
        windows' origins (N * P, D) int64 ((N * P, 1 + D) with include_n_position)."""
        relative = check_position_mode(position_mode)
        patches = self._quilt.unstitch(tensor)
        if add_positional_channels:
            patches = self._quilt.add_positions(patches, relative, normalize_positions)
        if return_positions:
            origins = self._quilt.window_origins(tensor.shape[0], include_n_position).to(tensor.device)
            return patches, origins
        return patches

    def unstitch_data_pair(self, tensor_in: torch.Tensor, tensor_out: torch.Tensor, missing_label=None,
                           return_positions: bool = False, include_n_position: bool = False,
                           add_positional_channels: bool = False, normalize_positions: bool = True,
                           position_mode: str = "absolute"):
        """Patches of an input (N, C, *shape) and its labels (N, C', *shape) or (N, *shape); with missing_label,
        the labels' border pixels are set to it. Positions as in unstitch (for the input)."""
        relative = check_position_mode(position_mode)
        label = None if missing_label is None else float(missing_label)
        patches_in, patches_out = self._quilt.unstitch_data_pair(tensor_in, tensor_out, label)
        if add_positional_channels:
            patches_in = self._quilt.add_positions(patches_in, relative, normalize_positions)
        if return_positions:
            origins = self._quilt.window_origins(tensor_in.shape[0], include_n_position).to(tensor_in.device)
            return patches_in, patches_out, origins
        return patches_in, patches_out

    def stitch(self, ml_tensor: torch.Tensor, use_numba: bool = True):
        """(result (N, C, *shape), weights (*shape)): the weighted mean of the patches at their windows, and the
        sum of the window weights per pixel. use_numba is accepted for the original's callers and ignored."""
        del use_numba
        return self._quilt.stitch(ml_tensor)

    def unstitch_out(self, tensor: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """unstitch into `patches`, a contiguous buffer of the right shape, dtype and device (no autograd)."""
        return self._quilt.unstitch_out(tensor, patches)

    def stitch_out(self, ml_tensor: torch.Tensor, result: torch.Tensor, weights: torch.Tensor):
        """stitch into `result` and `weights` (no autograd); the same values as stitch."""
        return self._quilt.stitch_out(ml_tensor, result, weights)
