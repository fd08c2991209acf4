"""LargeNCYXQuilt and LargeNCZYXQuilt: the original's disk-cached quilts over the extension's, which keep their
accumulators in a Zarr group with journaled checkpoints, so a run resumes after a crash."""

from __future__ import annotations

import numpy as np
import torch

from . import _C
from ._common import OriginalAttributes, blend_kwargs, per_axis, window_origin

LARGE_DOC = """
    Files under the prefix `filename`: filename_acc.zarr (the accumulators and a checkpoint of what was stitched;
    opening the same prefix with the same settings resumes: missing_indices() tells what is left),
    filename_mean.zarr and filename_std.zarr (what return_mean computes). One quilt at a time holds a prefix:
    close() it (or use `with`) before opening it again.

    Extensions (keyword only): blend, sigma_scale, custom_window, pad, pad_value (as NCYXQuilt), cache_bytes
    (accumulator chunks kept in memory, default 512 MiB), checkpoint_every (patches), checkpoint_seconds (default 60),
    allow_restitch (stitching an index twice adds it twice, else an error), track_std, durable (fsync checkpoints).
"""


class LargeQuiltBase(OriginalAttributes):
    def _setup(self, filename, N, sizes, window, step, border, border_weight, extensions):
        self.filename = filename
        self.N = N
        self._set_geometry(sizes, window, step, border, border_weight)
        options = {k: extensions.pop(k) for k in list(extensions)
                   if k in ("cache_bytes", "checkpoint_every", "checkpoint_seconds", "allow_restitch", "track_std",
                            "durable")}
        quilt_type = _C.LargeQuilt2D if self._ndim == 2 else _C.LargeQuilt3D
        self._window = per_axis(window, self._ndim, "window")
        self._step = per_axis(step, self._ndim, "step")
        self._sizes = tuple(sizes)
        self._padded = extensions.get("pad", "none") != "none"
        self._quilt = quilt_type(str(filename), N, list(sizes), list(self._window), list(self._step),
                                 **blend_kwargs(self.border, border_weight, **extensions), **options)
        self._times = tuple(self._quilt.get_times())
        self._set_times(self._times)
        self.weight = self._quilt.weights()
        self.N_chunks = self._quilt.N_chunks
        self._next = 0
        self._input = None  # (path, ZarrArray) of the last Zarr input given by path

    # --- the original's calls -----------------------------------------------------------------------------------
    def border_tensor(self) -> np.ndarray:
        """1 inside the border, 0 on it, of the window's shape (a NumPy array, as the original's)."""
        return self._quilt.border_tensor().numpy()

    def get_times(self) -> tuple:
        return self._times

    def unstitch(self, tensor, index: int, return_positions: bool = False, include_n_position: bool = False):
        """Window `index` (C, *window) of tensor (N, C, *shape): a tensor, a qlty_cpp.ZarrArray or the path of a
        Zarr array (read from disk). With return_positions, also its origin ((n,) + origin with include_n_position)."""
        if isinstance(tensor, str):  # opened once per path, not once per window
            if self._input is None or self._input[0] != tensor:
                self._input = (tensor, _C.ZarrArray(tensor))
            tensor = self._input[1]
        if isinstance(tensor, _C.ZarrArray):
            patch = self._quilt.unstitch_zarr(tensor, int(index))
        else:
            patch = self._quilt.unstitch(tensor, int(index))
        if not return_positions:
            return patch
        origin = window_origin(int(index), self._sizes, self._window, self._step, self._times, self._padded)
        position = torch.tensor(origin if include_n_position else origin[1:], dtype=torch.int64)
        return patch, position

    def unstitch_next(self, tensor, return_positions: bool = False, include_n_position: bool = False):
        """(index, patch) of the next window in index order (and its position with return_positions); after the
        last one, StopIteration, as the original."""
        if self._next >= self.N_chunks:
            raise StopIteration
        index = self._next
        self._next += 1
        out = self.unstitch(tensor, index, return_positions, include_n_position)
        return (index, *out) if return_positions else (index, out)

    def stitch(self, patch: torch.Tensor, index_flat, patch_var: torch.Tensor | None = None) -> None:
        """Adds the prediction `patch` ((1, C, *window) or (C, *window)) of window `index_flat`, and its variance
        patch_var (broadcast to the patch's shape). Batched: index_flat a sequence of B indices and patch (B, C, *window)."""
        if patch_var is not None and patch_var.shape != patch.shape:  # e.g. one variance for all channels
            try:
                patch_var = torch.broadcast_to(patch_var, patch.shape)
            except RuntimeError:
                raise ValueError(f"{type(self).__name__}.stitch: patch_var {tuple(patch_var.shape)} does not "
                                 f"broadcast to the patch's shape {tuple(patch.shape)}") from None
        if isinstance(index_flat, torch.Tensor) and index_flat.dim() == 0:
            index_flat = int(index_flat)
        if isinstance(index_flat, (int, np.integer)):
            self._quilt.stitch(patch, int(index_flat), patch_var)
        else:
            indices = index_flat.tolist() if hasattr(index_flat, "tolist") else list(index_flat)
            self._quilt.stitch_many([int(i) for i in indices], patch, patch_var)

    def return_mean(self, std: bool = False, normalize: bool = False, eps: float = 1e-8,
                    renormalize_channels: bool | None = None, in_memory: bool = True):
        """The mean of the stitched predictions (N, C, *shape) as a NumPy float32 array (with std, also their
        standard deviation), written to filename_mean.zarr (and filename_std.zarr). normalize (the 3D original's
        renormalize_channels) divides by the mean's sum over channels. eps is accepted and not needed: every pixel
        has a window weight of at least 1e-8. With in_memory=False only the Zarr arrays are written (None returned)."""
        del eps
        if renormalize_channels is not None:
            normalize = renormalize_channels
        mean, spread = self._quilt.return_mean(std, normalize, in_memory)
        if not in_memory:
            return None
        return (mean.numpy(), spread.numpy()) if std else mean.numpy()

    def unstitch_and_clean_sparse_data_pair(self, tensor_in, tensor_out, missing_label):
        """Windows of tensor_in and tensor_out whose labels are not all missing_label inside the border."""
        return self._quilt.unstitch_and_clean_sparse_data_pair(tensor_in, tensor_out, float(missing_label))

    # --- resume and lifetime --------------------------------------------------------------------------------------
    def missing_indices(self) -> list:
        """Windows not stitched yet (by the last checkpoint, or in this process)."""
        return self._quilt.missing_indices()

    def is_stitched(self, index: int) -> bool:
        return self._quilt.is_stitched(int(index))

    def stitch_order(self, channels: int = 0) -> list:
        """Every index once, in the order that moves the fewest accumulator chunks through the cache."""
        return self._quilt.stitch_order(channels)

    def checkpoint(self) -> None:
        """Makes everything stitched so far durable (a resume starts from here)."""
        self._quilt.checkpoint()

    def close(self) -> None:
        """Takes a last checkpoint and releases the prefix."""
        self._quilt.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
