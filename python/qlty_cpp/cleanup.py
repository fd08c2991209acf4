"""Dropping training pairs without labels (qlty.cleanup)."""

from __future__ import annotations

import numpy as np
import torch

from . import _C


def _border(border_tensor):
    return torch.from_numpy(np.asarray(border_tensor)) if isinstance(border_tensor, np.ndarray) else border_tensor


def weed_sparse_classification_training_pairs_2D(tensor_in: torch.Tensor, tensor_out: torch.Tensor, missing_label,
                                                 border_tensor):
    """(tensor_in[kept], tensor_out[kept], removed): keeps patch i when tensor_out[i] (M, [C,] Y, X) has a label
    other than missing_label where border_tensor (Y, X) is 1; removed is True for each dropped patch."""
    return _C.weed_sparse_classification_training_pairs_2D(tensor_in, tensor_out, float(missing_label),
                                                           _border(border_tensor))


def weed_sparse_classification_training_pairs_3D(tensor_in: torch.Tensor, tensor_out: torch.Tensor, missing_label,
                                                 border_tensor):
    """As the 2D version for patches (M, [C,] Z, Y, X) and border_tensor (Z, Y, X)."""
    return _C.weed_sparse_classification_training_pairs_3D(tensor_in, tensor_out, float(missing_label),
                                                           _border(border_tensor))
