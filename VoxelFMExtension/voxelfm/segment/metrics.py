"""Overlap and surface-distance metrics for evaluating segmentations (benchmarks and tests)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    p, r = np.asarray(pred, bool), np.asarray(ref, bool)
    denom = p.sum() + r.sum()
    return 1.0 if denom == 0 else float(2.0 * np.logical_and(p, r).sum() / denom)


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=np.ones((3, 3, 3), bool), border_value=0)


def hd95(pred: np.ndarray, ref: np.ndarray, spacing_kji) -> float:
    """Symmetric 95th-percentile Hausdorff distance in mm between mask surfaces; inf if exactly one is empty."""
    p, r = np.asarray(pred, bool), np.asarray(ref, bool)
    if not p.any() and not r.any():
        return 0.0
    if not p.any() or not r.any():
        return float("inf")
    sp = np.asarray(spacing_kji, dtype=float)
    sp_, sr = _surface(p), _surface(r)
    dt_r = ndimage.distance_transform_edt(~sr, sampling=sp)
    dt_p = ndimage.distance_transform_edt(~sp_, sampling=sp)
    d = np.concatenate([dt_r[sp_], dt_p[sr]])
    return float(np.percentile(d, 95))
