"""Crop to the body (the reference's "background crop"): the reference rule, plus fall-backs where it fails.

Reference rule (on the loaded grid, before resampling): foreground = voxels > -800 HU; count foreground voxels in a
21x21x21 box around each voxel, zero padding outside the volume; keep voxels whose count is strictly greater than
half the box (0.5 * 21^3); bounding box of kept voxels enlarged by 10 voxels per side, clamped to the volume.

Why the fall-backs: with zero padding a voxel can only be kept when >= 11 foreground voxels fit along every axis of
its window, so the reference raises on any volume with <= 10 (body) slices. We then retry with the box clipped per
axis to the volume size and to the extent of the foreground (largest odd size <= both, threshold still half the
box volume), and if that keeps nothing either, we keep the whole volume and say so in a warning. Box sums use integer prefix sums, so the keep decision is
exact (no float rounding at the threshold).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FOREGROUND_HU = -800.0
KERNEL = 21
MARGIN = 10


@dataclass
class CropResult:
    offset_kji: tuple[int, int, int]  # start index per array axis (z, y, x)
    shape_kji: tuple[int, int, int]  # size per array axis after cropping
    rule: str  # "reference", "clipped_kernel" or "none"
    warning: str | None = None

    def apply(self, array: np.ndarray) -> np.ndarray:
        sl = tuple(slice(o, o + n) for o, n in zip(self.offset_kji, self.shape_kji, strict=True))
        return array[sl]


def _box_sum_block(values: np.ndarray, size: int, axis: int) -> np.ndarray:
    n = values.shape[axis]
    half = size // 2
    csum = np.cumsum(values, axis=axis, dtype=np.int32)
    zero_shape = list(values.shape)
    zero_shape[axis] = 1
    csum = np.concatenate([np.zeros(zero_shape, dtype=np.int32), csum], axis=axis)
    idx = np.arange(n)
    hi = np.minimum(idx + half, n - 1) + 1
    lo = np.maximum(idx - half, 0)
    return np.take(csum, hi, axis=axis) - np.take(csum, lo, axis=axis)


def _box_sum(values: np.ndarray, size: int, axis: int, dtype, block: int = 16) -> np.ndarray:
    """Sum over a centred window of odd ``size`` along ``axis`` with zero padding (exact integer arithmetic).

    Processed in slabs along another axis so the int32 prefix sums stay small; the result is stored in the
    smallest dtype that holds the window count (uint8 / int16), keeping a 512x512x300 CT under ~0.5 GB.
    """
    out = np.empty(values.shape, dtype=dtype)
    other = 1 if axis == 0 else 0
    for start in range(0, values.shape[other], block):
        sl = [slice(None)] * values.ndim
        sl[other] = slice(start, start + block)
        out[tuple(sl)] = _box_sum_block(values[tuple(sl)], size, axis)
    return out


def _odd_floor(n: int) -> int:
    return n if n % 2 else n - 1


def _kept_bbox(fg: np.ndarray, kernel: tuple[int, int, int], margin: int) -> tuple[tuple, tuple] | None:
    counts = _box_sum(fg, kernel[0], 0, np.uint8)  # <= 21
    counts = _box_sum(counts, kernel[1], 1, np.int16)  # <= 441
    counts = _box_sum(counts, kernel[2], 2, np.int16)  # <= 9261
    keep = counts > 0.5 * float(np.prod(kernel))
    if not keep.any():
        return None
    start, size = [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(keep.any(axis=other))
        lo = max(int(hits[0]) - margin, 0)
        hi = min(int(hits[-1]) + margin, fg.shape[axis] - 1)
        start.append(lo)
        size.append(hi - lo + 1)
    return tuple(start), tuple(size)


def crop_to_body(array: np.ndarray, threshold: float = FOREGROUND_HU) -> CropResult:
    """Bounding box of the body in ``array`` [k, j, i] (HU); see the module docstring for the rules."""
    fg = array > threshold
    box = _kept_bbox(fg, (KERNEL,) * 3, MARGIN)
    if box is not None:
        return CropResult(box[0], box[1], "reference")
    if fg.any():
        extent = [
            int(np.ptp(np.flatnonzero(fg.any(axis=tuple(b for b in range(3) if b != a))))) + 1
            for a in range(3)
        ]
        # at least 3 voxels where the axis allows it, so isolated noise voxels never count as a body
        clipped = tuple(
            max(min(3, _odd_floor(n)), _odd_floor(min(KERNEL, n, e)))
            for n, e in zip(array.shape, extent, strict=True)
        )
        box = _kept_bbox(fg, clipped, MARGIN)
        if box is not None:
            return CropResult(box[0], box[1], "clipped_kernel")
    return CropResult(
        (0, 0, 0),
        tuple(int(n) for n in array.shape),
        "none",
        "Background crop found no body (no compact region above -800 HU); the whole volume was kept.",
    )
