"""Boxes (markups ROIs) around a structure: from a segmentation prediction, or from corner landmarks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .markups_json import roi_markup
from .points import PointList


@dataclass(frozen=True)
class Box:
    """An oriented box: centre (RAS mm), edge lengths along its axes (mm), axes as columns (RAS)."""

    name: str
    center: np.ndarray
    size: np.ndarray
    axes: np.ndarray  # 3x3, columns = unit box axes

    def corners(self) -> np.ndarray:
        """The 8 corners [8, 3] (RAS)."""
        signs = np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)], dtype=np.float64)
        return self.center + (signs * self.size / 2.0) @ self.axes.T

    def markup(self, description: str = "") -> dict:
        return roi_markup(self.name, self.center, self.size, self.axes, description)


def box_from_mask(mask: np.ndarray, ijk_to_ras: np.ndarray, name: str) -> Box:
    """The tightest box around a mask [k, j, i], along the grid's axes (voxel extents included)."""
    kji = np.argwhere(np.asarray(mask, bool))
    if not len(kji):
        raise InputError(f"'{name}' has no voxels: nothing to put a box around.")
    m = np.asarray(ijk_to_ras, np.float64)
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    lo, hi = kji.min(0)[::-1] - 0.5, kji.max(0)[::-1] + 0.5  # (i, j, k) voxel-edge extent
    center = m[:3, :3] @ ((lo + hi) / 2.0) + m[:3, 3]
    return Box(name, center, (hi - lo) * spacing, m[:3, :3] / spacing)


def box_from_labelmap(
    labelmap: np.ndarray, ijk_to_ras: np.ndarray, value: int, name: str, source: str = "the label map"
) -> Box:
    """The box of one class of a labelmap (e.g. ``SegmentationResult.labelmap`` and a class value); InputError
    naming the label and the labels present when ``value`` has no voxels."""
    mask = np.asarray(labelmap) == int(value)
    if not mask.any():
        present = [int(v) for v in np.unique(labelmap) if v != 0]
        listed = ", ".join(map(str, present[:20])) + (
            f", ... ({len(present)} in all)" if len(present) > 20 else ""
        )
        raise InputError(
            f"Label {int(value)} has no voxels in {source}; the labels present are "
            f"{listed or 'none (it holds only background, 0)'}. Use --label with one of them."
        )
    return box_from_mask(mask, ijk_to_ras, name)


def box_from_points(points: PointList, name: str, names: list[str] | None = None) -> Box:
    """The patient-axis-aligned box spanned by corner landmarks (two opposite corners, or any >= 2 points)."""
    pts = points.subset(names) if names else points
    if names and len(pts) != len(set(names)):
        missing = [n for n in names if n not in points.names]
        raise InputError(f"Box '{name}': no point called {', '.join(repr(n) for n in missing)}.")
    if len(pts) < 2:
        raise InputError(f"Box '{name}' needs at least two corner points, got {len(pts)}.")
    lo, hi = pts.ras.min(0), pts.ras.max(0)
    return Box(name, (lo + hi) / 2.0, hi - lo, np.eye(3))
