"""Sub-patch refinement by local intensity correlation (NCC) around a feature match.

WHY: one patch of a feature grid spans 10-40 mm; within that window the CT itself says precisely where the
reference's neighbourhood is. A small intensity cube around the reference point is slid over a window around
the feature match (normalised cross-correlation, translation only) on patient-aligned grids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..imaging.volume import Volume
from .canonical import CANONICAL_AXES, centred_grid, resample_onto

FLAT_SD_HU = 1.0  # a window whose intensities vary less than this (standard deviation) is flat


@dataclass(frozen=True)
class NCCMatch:
    ras: np.ndarray  # [3] best position
    score: float  # NCC at that position, -1..1
    start_score: float = 0.0  # NCC at the starting position


def ncc_map(template: np.ndarray, area: torch.Tensor) -> np.ndarray | None:
    """NCC of an n^3 template at every shift inside ``area`` (valid positions); None for a flat template."""
    n_t = template.shape[0]
    t = torch.from_numpy(np.ascontiguousarray(template, dtype=np.float32))
    t0 = t - t.mean()
    t_norm = float(t0.norm())
    if t_norm < 1e-3:  # a flat template (e.g. air): nothing to correlate
        return None
    a = area[None, None]
    num = F.conv3d(a, t0[None, None])[0, 0]
    mean = F.avg_pool3d(a, n_t, stride=1)[0, 0]
    mean_sq = F.avg_pool3d(a * a, n_t, stride=1)[0, 0]
    local_sd = torch.sqrt(torch.clamp(mean_sq - mean * mean, min=0.0))  # HU, per window
    ncc = num / (local_sd * float(n_t**1.5) * t_norm).clamp_min(1e-6)
    # a flat window (air, or the fill outside the scan) has no correlation; without this its float32
    # rounding (~0.1 HU^2 of variance at -1000 HU) divided by ~0 gave scores of 1e10
    return torch.where(local_sd < FLAT_SD_HU, torch.zeros_like(ncc), ncc.clamp(-1.0, 1.0)).numpy()


def ncc_refine(
    templates: list[np.ndarray], target: Volume, start_ras: np.ndarray, radius_mm: float, spacing: float
) -> NCCMatch:
    """Where the reference cube(s) (n^3, middle voxel = the reference point, canonical grid at ``spacing``)
    correlate best, on average, within ``radius_mm`` of ``start_ras`` in the target (sub-voxel by a
    parabola through the peak's neighbours)."""
    n_t = templates[0].shape[0]
    r = max(1, int(round(radius_mm / spacing)))
    grid = centred_grid(start_ras, n_t + 2 * r, 1, spacing)
    area = torch.from_numpy(resample_onto(target, grid).array.astype(np.float32))
    maps = [m for m in (ncc_map(t, area) for t in templates) if m is not None]
    if not maps:
        return NCCMatch(np.asarray(start_ras, np.float64), 0.0)
    ncc = np.mean(maps, axis=0)
    kji = np.array(np.unravel_index(int(np.argmax(ncc)), ncc.shape), dtype=np.float64)
    kji += _parabola_offsets(ncc, kji.astype(int))
    offset_ijk = kji[::-1] - r  # shift from the window centre, canonical voxels (i -> L, j -> P, k -> S)
    return NCCMatch(
        np.asarray(start_ras, np.float64) + CANONICAL_AXES @ offset_ijk * spacing,
        float(ncc.max()),
        float(ncc[r, r, r]),
    )


def _parabola_offsets(vol: np.ndarray, at: np.ndarray) -> np.ndarray:
    out = np.zeros(3)
    for ax in range(3):
        if 0 < at[ax] < vol.shape[ax] - 1:
            lo, hi = at.copy(), at.copy()
            lo[ax] -= 1
            hi[ax] += 1
            a, b, c = vol[tuple(lo)], vol[tuple(at)], vol[tuple(hi)]
            den = a - 2 * b + c
            if den < 0:
                out[ax] = float(np.clip(0.5 * (a - c) / den, -0.5, 0.5))
    return out
