"""3D block masking for iBOT and the batch collation that assigns mask ratios.

Masking contiguous 3D blocks (rather than scattered tokens) forces the student to infer anatomy from
context instead of interpolating neighbours. As in the reference, only a fraction of the global crops in
a batch is masked and their ratios are spread evenly over ``mask_ratio_min_max`` (stratified), so every
batch sees easy and hard cases.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def block_mask_3d(
    grid: tuple[int, int, int],
    n_mask: int,
    rng: np.random.Generator,
    min_block: int = 4,
    max_aspect: float = 3.0,
    max_attempts: int = 10,
) -> np.ndarray:
    """Bool [d,h,w] with exactly ``n_mask`` True: random 3D boxes, then random single tokens for any rest."""
    mask = np.zeros(grid, dtype=bool)
    total = int(np.prod(grid))
    n_mask = int(min(max(n_mask, 0), total))
    count = 0
    while count < n_mask:
        remaining = n_mask - count
        added = 0
        for _ in range(max_attempts):
            lo = min(min_block, remaining)
            vol = rng.uniform(lo, remaining)
            log_ar = rng.uniform(-math.log(max_aspect), math.log(max_aspect), size=3)
            log_ar -= log_ar.mean()
            sides = [
                int(min(max(1, round(vol ** (1 / 3) * math.exp(a))), g))
                for a, g in zip(log_ar, grid, strict=True)
            ]
            off = [int(rng.integers(0, g - s + 1)) for g, s in zip(grid, sides, strict=True)]
            sl = tuple(slice(o, o + s) for o, s in zip(off, sides, strict=True))
            new = int(np.prod(sides)) - int(mask[sl].sum())
            if 0 < new <= remaining:
                mask[sl] = True
                added = new
                break
        if added == 0:
            break
        count += added
    if count < n_mask:  # blocks could not fit exactly: top up with single tokens
        free = np.flatnonzero(~mask.ravel())
        pick = rng.choice(free, size=n_mask - count, replace=False)
        mask.ravel()[pick] = True
    return mask


def sample_masks(
    n_crops: int,
    grid: tuple[int, int, int],
    ratio_min_max: tuple[float, float],
    probability: float,
    rng: np.random.Generator,
) -> torch.Tensor:
    """Bool [n_crops, d*h*w]: int(n_crops*probability) crops masked with stratified ratios, order shuffled."""
    n_tokens = int(np.prod(grid))
    n_masked = int(n_crops * probability)
    edges = np.linspace(ratio_min_max[0], ratio_min_max[1], n_masked + 1)
    masks = [
        block_mask_3d(grid, int(n_tokens * rng.uniform(edges[i], edges[i + 1])), rng).ravel()
        for i in range(n_masked)
    ]
    masks += [np.zeros(n_tokens, dtype=bool)] * (n_crops - n_masked)
    order = rng.permutation(n_crops)
    return torch.from_numpy(np.stack([masks[i] for i in order]))
