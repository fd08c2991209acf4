"""Pairs of 3D patches at controlled displacements, and the voxels they share (qlty.patch_pairs_3d)."""

from __future__ import annotations

import torch

from . import _C
from .patch_pairs_2d import _seed


def extract_patch_pairs_3d(tensor: torch.Tensor, window, num_patches: int, delta_range, random_seed=None):
    """(patches1 (N*P, C, U, V, W), patches2, deltas (N*P, 3) float32 as (dx, dy, dz)) from tensor (N, C, Z, Y, X);
    as extract_patch_pairs, without rotations."""
    window = tuple(int(w) for w in window)
    low, high = (float(v) for v in delta_range)
    return _C.extract_patch_pairs_3d(tensor, window, int(num_patches), (low, high), _seed(random_seed))


def extract_overlapping_pixels_3d(patches1: torch.Tensor, patches2: torch.Tensor, deltas: torch.Tensor):
    """As extract_overlapping_pixels for 3D pairs: (u, v, w) of patch 1 matches (u - dz, v - dy, w - dx)."""
    return _C.extract_overlapping_pixels_3d(patches1, patches2, deltas)
