"""Pairs of 2D patches at controlled displacements, and the pixels they share (qlty.patch_pairs_2d)."""

from __future__ import annotations

import torch

from . import _C


def _seed(random_seed):
    if random_seed is None:
        return None
    if int(random_seed) < 0:
        raise ValueError(f"random_seed must be >= 0, got {random_seed}")
    return int(random_seed)


def extract_patch_pairs(tensor: torch.Tensor, window, num_patches: int, delta_range, random_seed=None,
                        rotation_choices=None, return_positions: bool = False, include_n_position: bool = False):
    """(patches1 (N*P, C, U, V), patches2, deltas (N*P, 2) float32 as (dx, dy), rotations (N*P,) int64): P pairs per
    image of tensor (N, C, Y, X); patch 2 starts (dy, dx) from patch 1, with window // 4 <= low <= |delta| <= high
    <= 3 * window // 4, and is turned by rot90(k), k drawn from rotation_choices (modulo 4; empty: no turn). With return_positions also
    positions1 and positions2 ((y, x), or (n, y, x) with include_n_position). Differentiable with respect to
    tensor. The same seed gives the same pairs (pairs are drawn by qlty for C++'s own sampler, not the original's)."""
    window = tuple(int(w) for w in window)
    low, high = (float(v) for v in delta_range)
    # the original's rules: quarter turns modulo 4, and no choices meaning no turn
    choices = None if rotation_choices is None else [int(k) % 4 for k in rotation_choices] or [0]
    if not return_positions:
        return _C.extract_patch_pairs(tensor, window, int(num_patches), (low, high), _seed(random_seed), choices)
    p1, p2, deltas, turns, pos1, pos2 = _C.extract_patch_pairs_with_positions(
        tensor, window, int(num_patches), (low, high), _seed(random_seed), choices)
    if not include_n_position:
        pos1, pos2 = pos1[:, 1:].contiguous(), pos2[:, 1:].contiguous()
    return p1, p2, deltas, turns, pos1, pos2


def extract_overlapping_pixels(patches1: torch.Tensor, patches2: torch.Tensor, deltas: torch.Tensor,
                               rotations: torch.Tensor | None = None):
    """(overlapping1 (K, C), overlapping2 (K, C)): for each pair, after undoing its rotation, the pixels (u, v) of
    patch 1 that lie in patch 2 at (u - dy, v - dx), and those pixels of patch 2. Differentiable."""
    return _C.extract_overlapping_pixels(patches1, patches2, deltas, rotations)
