"""Sliding-window tiling of a patch grid for volumes over the token budget.

Tiles overlap by a few patches; per-cell weights ramp down towards tile borders so that the blended grid
has no seams and cells near a tile edge (which see less context) count less.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tile:
    start: tuple[int, int, int]  # in patch cells (d, h, w)
    size: tuple[int, int, int]

    def slices(self, scale: int = 1) -> tuple[slice, slice, slice]:
        return tuple(slice(s * scale, (s + n) * scale) for s, n in zip(self.start, self.size, strict=True))  # type: ignore[return-value]


def tile_size(grid: tuple[int, int, int], max_tokens: int) -> tuple[int, int, int]:
    """Largest near-isotropic tile (in cells) whose token count fits the budget."""
    if max_tokens < 1:
        raise ValueError("max_tokens must be >= 1")
    size = list(grid)
    while int(np.prod(size)) > max_tokens:
        a = int(np.argmax(size))  # shrink the longest side first: tiles stay near-cubic
        size[a] -= 1
    return tuple(max(1, s) for s in size)  # type: ignore[return-value]


def _starts(n: int, t: int, overlap: int) -> list[int]:
    if t >= n:
        return [0]
    stride = max(1, t - overlap)
    starts = list(range(0, n - t + 1, stride))
    if starts[-1] != n - t:
        starts.append(n - t)
    return starts


def plan_tiles(grid: tuple[int, int, int], max_tokens: int, overlap: int = 2) -> list[Tile]:
    """Tiles covering the grid; a single tile when the whole grid fits."""
    t = tile_size(grid, max_tokens)
    ov = [min(overlap, max(0, s - 1)) for s in t]
    return [
        Tile((z, y, x), t)
        for z in _starts(grid[0], t[0], ov[0])
        for y in _starts(grid[1], t[1], ov[1])
        for x in _starts(grid[2], t[2], ov[2])
    ]


def blend_weights(size: tuple[int, int, int], overlap: int) -> np.ndarray:
    """[d,h,w] weights: 1 in the interior, linearly smaller within `overlap` cells of a border."""
    axes = []
    for n in size:
        i = np.arange(n)
        dist = np.minimum(i, n - 1 - i).astype(np.float32)
        axes.append(np.minimum(dist + 1.0, overlap + 1.0) / (overlap + 1.0))
    return axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
