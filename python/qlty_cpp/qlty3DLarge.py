"""LargeNCZYXQuilt: disk-cached 3D quilt (qlty.qlty3DLarge)."""

from __future__ import annotations

from ._large import LARGE_DOC, LargeQuiltBase


class LargeNCZYXQuilt(LargeQuiltBase):
    __doc__ = """Stitches predictions of volumes (N, C, Z, Y, X) one window at a time into accumulators on disk.

    LargeNCZYXQuilt(filename, N, Z, Y, X, window, step, border=None, border_weight=0.1); used as LargeNCYXQuilt.
    """ + LARGE_DOC

    _ndim = 3
    _axes = ("Z", "Y", "X")

    def __init__(self, filename: str, N: int, Z: int, Y: int, X: int, window, step, border=None,
                 border_weight: float = 0.1, **extensions):
        self._setup(filename, N, (Z, Y, X), window, step, border, border_weight, extensions)
