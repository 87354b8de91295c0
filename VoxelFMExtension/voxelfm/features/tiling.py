"""Sliding-window tiling of a patch grid for volumes over the token budget.

Tiles overlap by a few patches; per-cell weights ramp down towards tile borders so that the blended grid
has no seams and cells near a tile edge (which see less context) count less.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import numpy as np

# The default token budget (see ``default_max_tokens``): one pass, no tiles, for any chest CT at 0.75-1 mm
# (20-30k tokens) where memory allows. Measured ViT-B/14 fp32 forward peak RSS on CPU (one pass, SDPA):
# ~0.7 GB + ~60 KB per token (0.94 / 1.41 / 1.88 GB at 4k / 8k / 16k tokens; the whole `voxelfm features`
# command 1.7 / 2.0 / see results/speed_table.md at 8k / 16k / 25.9k), so 32k tokens need ~2.7 GB.
MAX_DEFAULT_TOKENS = 32768
MIN_DEFAULT_TOKENS = 4096
BASE_BYTES = 0.7 * 2**30  # model + activations that do not grow with the token count (ViT-B fp32)
BYTES_PER_TOKEN = 60 * 2**10
MEMORY_SHARE = 0.25  # of physical memory: Slicer, the CT and its segmentations live beside the forward


def physical_memory_bytes() -> int | None:
    """Total physical memory, or None where the platform does not say (then the fixed default applies)."""
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    with contextlib.suppress(ImportError, AttributeError):
        import psutil  # type: ignore[import-not-found]  # Windows; often present in Slicer's Python

        return int(psutil.virtual_memory().total)
    return None


def default_max_tokens(memory_bytes: int | None = None) -> int:
    """The token budget the measured memory cost allows on this machine, in [4096, 32768] (multiples of 1024).

    Rule: the largest N with BASE_BYTES + N * BYTES_PER_TOKEN <= MEMORY_SHARE * physical memory. Memory, not
    time, sets it: a one-pass 25.9k-token forward costs 1.9x the FLOPs of the four 8k tiles that cover it
    (attention is quadratic; results/speed_table.md has the measured times), but tiles see less context and
    blend seams, so one pass is preferred wherever it fits; a caller who wants speed passes a smaller budget.
    8 GB of RAM -> 22528 tokens (tiles only for the largest chest CTs), 16 GB or more -> 32768.
    """
    mem = physical_memory_bytes() if memory_bytes is None else memory_bytes
    if not mem:
        return 16384
    fit = int((MEMORY_SHARE * mem - BASE_BYTES) // BYTES_PER_TOKEN) // 1024 * 1024
    return max(MIN_DEFAULT_TOKENS, min(MAX_DEFAULT_TOKENS, fit))


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
