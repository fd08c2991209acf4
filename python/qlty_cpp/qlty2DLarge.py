"""LargeNCYXQuilt: disk-cached 2D quilt (qlty.qlty2DLarge)."""

from __future__ import annotations

from ._large import LARGE_DOC, LargeQuiltBase


class LargeNCYXQuilt(LargeQuiltBase):
    __doc__ = """Stitches predictions of images (N, C, Y, X) one window at a time into accumulators on disk.

    LargeNCYXQuilt(filename, N, Y, X, window, step, border=None, border_weight=0.1); a loop over N_chunks windows:
    index, patch = quilt.unstitch_next(data); quilt.stitch(model(patch[None]), index); then quilt.return_mean().
    """ + LARGE_DOC

    _ndim = 2
    _axes = ("Y", "X")

    def __init__(self, filename: str, N: int, Y: int, X: int, window, step, border=None, border_weight: float = 0.1,
                 **extensions):
        self._setup(filename, N, (Y, X), window, step, border, border_weight, extensions)
