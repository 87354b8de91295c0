"""Measurements of each segment of a labelmap, in physical space on any grid: volume, largest diameter, centroid.

WHY these definitions: they are Slicer's Segment Statistics (labelmap plugin, ITK's shape label statistics),
so the draft and the Segment Statistics table agree: volume = voxel count x voxel volume; centroid = mean of
the voxel centres in RAS; largest diameter = ITK's Feret diameter, the largest distance between two voxel
centres. Distances use the full ijk_to_ras (oblique, flipped, anisotropic grids all work).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..imaging.volume import Volume


@dataclass(frozen=True)
class SegmentMeasurement:
    name: str
    voxels: int
    volume_ml: float
    diameter_mm: float  # largest distance between two voxel centres (Feret diameter)
    centroid_ras: tuple[float, float, float]
    segment_id: str = ""  # the segment (Slicer) or label value (files) it came from
    source: str = ""  # the segmentation it came from (Slicer node id or file)

    def with_source(self, source: str) -> SegmentMeasurement:
        return dataclasses.replace(self, source=source)


def _voxel_centres(mask: np.ndarray, ijk_to_ras: np.ndarray) -> np.ndarray:
    kji = np.argwhere(mask)
    ijk1 = np.c_[kji[:, ::-1], np.ones(len(kji))]
    return (ijk1 @ np.asarray(ijk_to_ras, np.float64).T)[:, :3]


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it (the farthest pair always lies among these)."""
    from scipy.ndimage import binary_erosion, generate_binary_structure  # scipy (~0.2 s) only when measuring

    inner = binary_erosion(mask, structure=generate_binary_structure(3, 1), border_value=0)
    return mask & ~inner


def _max_pairwise(points: np.ndarray, chunk: int = 2048) -> float:
    best = 0.0
    for start in range(0, len(points), chunk):
        block = points[start : start + chunk]
        d2 = ((block[:, None, :] - points[None, :, :]) ** 2).sum(-1)
        best = max(best, float(d2.max()))
    return float(np.sqrt(best))


def largest_diameter(points: np.ndarray) -> float:
    """Largest distance between two of ``points`` [N, 3]: exact, via the convex hull (in the points' own
    1-, 2- or 3-dimensional span, so flat and linear segments work too)."""
    from scipy.spatial import ConvexHull, QhullError  # as above

    if len(points) < 2:
        return 0.0
    centred = points - points.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    rank = int((s > 1e-9 * max(s[0], 1e-12)).sum())
    if rank == 0:
        return 0.0
    coords = centred @ vt[:rank].T
    if rank == 1:
        return float(coords.max() - coords.min())
    try:
        vertices = coords[ConvexHull(coords).vertices]
    except QhullError:  # numerically degenerate: fall back to all points
        vertices = coords
    return _max_pairwise(vertices)


def measure_mask(
    mask: np.ndarray, ijk_to_ras: np.ndarray, name: str, segment_id: str = ""
) -> SegmentMeasurement:
    """Measurements of one boolean mask [k, j, i] on the grid ``ijk_to_ras``."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise InputError(f"Segment '{name}': a 3D mask is needed, got {mask.ndim} dimensions.")
    voxels = int(mask.sum())
    voxel_ml = abs(float(np.linalg.det(np.asarray(ijk_to_ras, np.float64)[:3, :3]))) / 1000.0
    if voxels == 0:
        return SegmentMeasurement(name, 0, 0.0, 0.0, (float("nan"),) * 3, segment_id)
    centroid = _voxel_centres(mask, ijk_to_ras).mean(0)
    diameter = largest_diameter(_voxel_centres(_surface(mask), ijk_to_ras))
    return SegmentMeasurement(
        name, voxels, voxels * voxel_ml, diameter, tuple(float(c) for c in centroid), segment_id
    )


def measure_labelmap(labels: Volume, names: dict[int, str] | None = None) -> list[SegmentMeasurement]:
    """One measurement per label value present (or per value in ``names``), in value order."""
    arr = np.asarray(labels.array)
    values = sorted(int(v) for v in np.unique(arr) if v != 0) if names is None else sorted(names)
    names = names or {}
    return [measure_mask(arr == v, labels.ijk_to_ras, names.get(v, f"label {v}"), str(v)) for v in values]
