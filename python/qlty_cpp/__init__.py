"""qlty for C++, from Python: the original qlty's quilts, disk-cached quilts, patch pairs and weeding, computed by
qlty's header-only C++ library (native multithreaded kernels; torch ops on other devices), plus blockwise inference.

    import qlty_cpp as qlty        # in place of `import qlty`
    quilt = qlty.NCYXQuilt(Y=128, X=128, window=(32, 32), step=(16, 16), border=(4, 4), border_weight=0.1)

Submodules carry the original's names (qlty_cpp.qlty2D, qlty3D, qlty2DLarge, qlty3DLarge, patch_pairs_2d,
patch_pairs_3d, cleanup). Tensors go in and out without copies; long calls release the GIL; threads are torch's
(torch.set_num_threads). Errors: ValueError / TypeError for bad arguments (with `field`, the argument, where known),
QltyError (tag, field, mismatches) for files, Zarr stores, checkpoints and models. See docs/python.md.
"""

import torch  # noqa: F401  (loads LibTorch before the extension, which links it)

from . import _C
from ._C import QltyError, QltyIOError, ZarrArray
from .blockwise import blockwise_status, infer_blockwise
from .cleanup import weed_sparse_classification_training_pairs_2D, weed_sparse_classification_training_pairs_3D
from .patch_pairs_2d import extract_overlapping_pixels, extract_patch_pairs
from .patch_pairs_3d import extract_overlapping_pixels_3d, extract_patch_pairs_3d
from .qlty2D import NCYXQuilt
from .qlty2DLarge import LargeNCYXQuilt
from .qlty3D import NCZYXQuilt
from .qlty3DLarge import LargeNCZYXQuilt
from . import cleanup, patch_pairs_2d, patch_pairs_3d, qlty2D, qlty2DLarge, qlty3D, qlty3DLarge  # noqa: E402

__version__ = _C.__version__

__all__ = [
    "LargeNCYXQuilt",
    "LargeNCZYXQuilt",
    "NCYXQuilt",
    "NCZYXQuilt",
    "QltyError",
    "QltyIOError",
    "ZarrArray",
    "blockwise_status",
    "extract_overlapping_pixels",
    "extract_overlapping_pixels_3d",
    "extract_patch_pairs",
    "extract_patch_pairs_3d",
    "infer_blockwise",
    "weed_sparse_classification_training_pairs_2D",
    "weed_sparse_classification_training_pairs_3D",
]
