"""NCYXQuilt: 2D images (N, C, Y, X) cut into overlapping patches and stitched back (qlty.qlty2D)."""

from __future__ import annotations

from ._common import BLEND_DOC, QuiltBase


class NCYXQuilt(QuiltBase):
    __doc__ = """Cuts images (N, C, Y, X) into overlapping windows and stitches patches back with border weighting.

    NCYXQuilt(Y, X, window, step, border=None, border_weight=1.0): window and step (Y, X) tuples (or ints); border
    pixels of each window (an int, a tuple or None) weigh border_weight when stitching, in [0, 1].
    """ + BLEND_DOC

    _ndim = 2
    _axes = ("Y", "X")

    def __init__(self, Y: int, X: int, window, step, border=None, border_weight: float = 1.0, **extensions):
        self._setup((Y, X), window, step, border, border_weight, extensions)
