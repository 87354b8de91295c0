"""Resample a CT onto a patient-aligned grid before extracting features: the geometry decides what the model sees.

WHY: the backbone sees the voxel array, not the patient. The same anatomy stored flipped (i running to the
patient's right instead of left), permuted or oblique gives the network a mirrored or rotated picture, and a
mirrored left kidney looks like a right kidney. Every volume we match is therefore resampled onto an isotropic
grid whose axes follow the patient (the one canonical order of ``imaging.canonical``: i -> Left, j -> Posterior,
k -> Superior), so reference and target are seen in the same orientation whatever their storage order. Points are
mapped through RAS.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..imaging.canonical import AIR_HU, CANONICAL_AXES, ras_bounds
from ..imaging.resample import resample_to_grid
from ..imaging.volume import Volume


@dataclass(frozen=True)
class Grid:
    """An isotropic patient-aligned grid: shape [k, j, i] and its ijk_to_ras."""

    shape_kji: tuple[int, int, int]
    ijk_to_ras: np.ndarray

    @property
    def spacing(self) -> float:
        return float(np.linalg.norm(self.ijk_to_ras[:3, 0]))


def grid_from_first_voxel(first_ras: np.ndarray, shape_kji, spacing: float) -> Grid:
    """The canonical grid with voxel (0, 0, 0) at ``first_ras``."""
    m = np.eye(4)
    m[:3, :3] = CANONICAL_AXES * float(spacing)
    m[:3, 3] = np.asarray(first_ras, dtype=np.float64)
    return Grid(tuple(int(n) for n in shape_kji), m)


def covering_grid(volume: Volume, spacing: float) -> Grid:
    """The canonical grid at ``spacing`` mm covering the whole volume (its RAS bounding box)."""
    if not spacing > 0:
        raise InputError(f"The feature spacing must be a positive number of mm, got {spacing}.")
    lo, hi = ras_bounds(volume)
    n_ijk = np.maximum(np.round((hi - lo) / spacing).astype(int), 1)  # along canonical i, j, k (L, P, S)
    # voxel centres half a voxel inside the box; canonical i runs from the Right edge towards Left, etc.
    first = np.array([hi[0] - spacing / 2, hi[1] - spacing / 2, lo[2] + spacing / 2])
    return grid_from_first_voxel(first, tuple(n_ijk[::-1]), spacing)


def centred_grid(center_ras: np.ndarray, cells: int, patch_size: int, spacing: float) -> Grid:
    """A cube of ``cells`` patches per side whose middle patch centre is exactly ``center_ras``.

    WHY: a point at a patch centre is described by that patch's own feature, not an interpolation.
    """
    n = int(cells) * int(patch_size)
    middle = (int(cells) // 2) * patch_size + (patch_size - 1) / 2.0  # index of the middle patch centre
    first = np.asarray(center_ras, dtype=np.float64) - CANONICAL_AXES @ np.full(3, middle * spacing)
    return grid_from_first_voxel(first, (n, n, n), spacing)


def resample_onto(volume: Volume, grid: Grid) -> Volume:
    """``volume`` on ``grid`` (trilinear; air outside the volume)."""
    arr = resample_to_grid(volume.array, volume.ijk_to_ras, grid.shape_kji, grid.ijk_to_ras, "linear", AIR_HU)
    return Volume(arr.astype(np.float32, copy=False), grid.ijk_to_ras.copy(), volume.name)


def canonical_volume(volume: Volume, spacing: float) -> Volume:
    """The whole volume on its covering canonical grid."""
    return resample_onto(volume, covering_grid(volume, spacing))
