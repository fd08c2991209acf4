"""NCZYXQuilt: volumes (N, C, Z, Y, X) cut into overlapping patches and stitched back (qlty.qlty3D)."""

from __future__ import annotations

from ._common import BLEND_DOC, QuiltBase


class NCZYXQuilt(QuiltBase):
    __doc__ = """Cuts volumes (N, C, Z, Y, X) into overlapping windows and stitches patches back with border weighting.

    NCZYXQuilt(Z, Y, X, window, step, border=None, border_weight=0.1): window and step (Z, Y, X) tuples (or ints);
    border pixels of each window (an int, a tuple or None) weigh border_weight when stitching, in [0, 1].
    """ + BLEND_DOC

    _ndim = 3
    _axes = ("Z", "Y", "X")

    def __init__(self, Z: int, Y: int, X: int, window, step, border=None, border_weight: float = 0.1, **extensions):
        self._setup((Z, Y, X), window, step, border, border_weight, extensions)
