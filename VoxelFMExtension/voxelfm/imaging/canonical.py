"""The one patient-aligned index order every volume is brought to before the backbone sees it.

WHY: the backbone sees the voxel array, not the patient. The same anatomy stored with a flipped, permuted or
oblique grid gives the network a mirrored or rotated picture (a mirrored left kidney looks like a right one),
so features, segmentation, retrieval and localisation would change with the storage order of the file.

WHICH order: the reference's training and inference data path stacks DICOM slices sorted by
ImagePositionPatient z (rows and columns as stored, i.e. i -> Left, j -> Posterior, k -> Superior for axial
images), and reads .mhd files (LUNA16) with SimpleITK's GetArrayFromImage, which is the same LPS index order
for identity-direction images. So the model was trained on LPS index order; in RAS the canonical axes are
i -> -R, j -> -A, k -> +S (``CANONICAL_AXES``). Its NIfTI reader keeps the stored order, which is why
``PreprocessConfig(orientation="stored")`` keeps it too (parity with the reference on NIfTI input).

HOW: an axis-aligned grid (any permutation and flips of the canonical axes) is reoriented exactly, by
transposing and reversing the array (no interpolation, every voxel kept); an oblique grid is resampled
(trilinear, air outside) onto the nearest axis-aligned grid: each canonical axis takes the spacing of the
stored axis closest to it, and the grid covers the volume's whole RAS box. The returned volume's ``ijk_to_ras``
is exact, so everything computed on it maps back to the original voxels through RAS.
"""

from __future__ import annotations

import itertools

import numpy as np

from .resample import resample_to_grid
from .volume import Volume

ORIENTATIONS = ("canonical", "stored")
AIR_HU = -1000.0
# Columns: i, j, k axes of the canonical grid in RAS (i -> L = -R, j -> P = -A, k -> S).
CANONICAL_AXES = np.diag([-1.0, -1.0, 1.0])
ALIGNED_TOL = 1e-3  # largest off-axis direction cosine still treated as axis-aligned (header rounding)


def nearest_axes(direction: np.ndarray) -> tuple[tuple[int, int, int], tuple[int, int, int], float]:
    """(stored axis of canonical i, j, k; sign of each; the smallest |cosine| of that assignment).

    ``direction``: 3x3 unit columns (stored i, j, k axes in RAS). The assignment maximises the summed
    |cosine| between canonical axes and stored axes (6 permutations, exact).
    """
    canon = np.asarray(direction, dtype=np.float64).T @ CANONICAL_AXES  # [stored axis, canonical axis]
    best = max(itertools.permutations(range(3)), key=lambda p: sum(abs(canon[p[c], c]) for c in range(3)))
    signs = tuple(1 if canon[best[c], c] >= 0 else -1 for c in range(3))
    worst = min(abs(canon[best[c], c]) for c in range(3))
    return tuple(int(a) for a in best), signs, float(worst)  # type: ignore[return-value]


def reorientation(volume: Volume) -> str:
    """How ``volume`` reaches the canonical order: "none", "permuted" (exact) or "resampled" (oblique)."""
    perm, signs, worst = nearest_axes(volume.direction)
    if worst < 1.0 - ALIGNED_TOL:
        return "resampled"
    return "none" if perm == (0, 1, 2) and signs == (1, 1, 1) else "permuted"


def _permuted(volume: Volume, perm, signs) -> Volume:
    """Exact reorientation: canonical axis c is stored axis perm[c], reversed where signs[c] < 0."""
    n_ijk = volume.shape_ijk
    new_to_old = np.zeros((4, 4))
    new_to_old[3, 3] = 1.0
    for c, (a, s) in enumerate(zip(perm, signs, strict=True)):
        new_to_old[a, c] = float(s)
        new_to_old[a, 3] = 0.0 if s > 0 else float(n_ijk[a] - 1)
    # numpy axis of index axis x is 2 - x ([k, j, i]); canonical numpy axis 2 - c takes stored axis 2 - perm[c]
    arr = np.transpose(volume.array, [2 - perm[2 - n] for n in range(3)])
    flips = tuple(slice(None, None, -1 if signs[2 - n] < 0 else 1) for n in range(3))
    arr = np.ascontiguousarray(arr[flips])
    return Volume(arr, volume.ijk_to_ras @ new_to_old, volume.name)


def ras_bounds(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """RAS min / max corner of the box the volume's voxels cover (any direction matrix)."""
    ni, nj, nk = volume.shape_ijk
    corners = np.array(
        [[i, j, k, 1.0] for i in (-0.5, ni - 0.5) for j in (-0.5, nj - 0.5) for k in (-0.5, nk - 0.5)]
    )
    ras = corners @ volume.ijk_to_ras.T
    return ras[:, :3].min(axis=0), ras[:, :3].max(axis=0)


def _resampled(volume: Volume, perm) -> Volume:
    """Oblique grid -> the nearest axis-aligned grid covering its RAS box (trilinear, air outside)."""
    spacing = np.array([volume.spacing[a] for a in perm], dtype=np.float64)  # along canonical i, j, k
    box = np.stack(ras_bounds(volume)) @ CANONICAL_AXES  # the box along the canonical axes (L, P, S)
    lo, hi = box.min(axis=0), box.max(axis=0)
    n = np.maximum(np.round((hi - lo) / spacing).astype(int), 1)
    m = np.eye(4)
    m[:3, :3] = CANONICAL_AXES * spacing[None, :]
    m[:3, 3] = CANONICAL_AXES @ (lo + spacing / 2)
    arr = resample_to_grid(volume.array, volume.ijk_to_ras, tuple(n[::-1]), m, "linear", AIR_HU)
    return Volume(arr, m, volume.name)


def to_canonical(volume: Volume) -> tuple[Volume, str]:
    """(``volume`` in the canonical index order, how: "none" | "permuted" | "resampled")."""
    how = reorientation(volume)
    if how == "none":
        return volume, how
    perm, signs, _ = nearest_axes(volume.direction)
    return (_permuted(volume, perm, signs) if how == "permuted" else _resampled(volume, perm)), how
