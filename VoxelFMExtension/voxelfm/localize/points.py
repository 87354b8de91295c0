"""Named points (landmarks) in RAS millimetres: the one in-memory point type of localisation.

WHY one type: markups files (LPS or RAS), fiducial nodes (RAS), predictions and probe targets all become a
``PointList``; LPS never appears beyond ``markups_json`` (the file) and the conversion helpers here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..imaging.volume import Volume

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def ras_to_lps(points: np.ndarray) -> np.ndarray:
    """[N,3] RAS -> LPS (and back: the map is its own inverse)."""
    return np.asarray(points, dtype=np.float64).reshape(-1, 3) @ LPS_FROM_RAS


lps_to_ras = ras_to_lps


@dataclass
class PointList:
    """Points with names (control point labels) and optional descriptions, positions in RAS mm."""

    names: list[str]
    ras: np.ndarray  # [N, 3]
    descriptions: list[str] = field(default_factory=list)
    name: str = ""  # the list's own name (markups node / file name)
    # [N] bool: a point that was looked for and not found (e.g. outside the scan's field of view); written as
    # Slicer's "missing" position status. Its position is where it was expected, for information only.
    missing: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def __post_init__(self) -> None:
        self.names = [str(n) for n in self.names]
        self.ras = np.asarray(self.ras, dtype=np.float64).reshape(-1, 3)
        if len(self.names) != len(self.ras):
            raise InputError(f"{len(self.names)} point names but {len(self.ras)} positions.")
        if not np.all(np.isfinite(self.ras)):
            bad = int(np.flatnonzero(~np.isfinite(self.ras).all(axis=1))[0])
            raise InputError(f"Point '{self.names[bad]}' has a non-finite position {self.ras[bad].tolist()}.")
        if not self.descriptions:
            self.descriptions = [""] * len(self.names)
        if len(self.descriptions) != len(self.names):
            raise InputError(f"{len(self.descriptions)} descriptions for {len(self.names)} points.")
        self.missing = np.asarray(self.missing, dtype=bool).reshape(-1)
        if not len(self.missing):
            self.missing = np.zeros(len(self.names), bool)
        if len(self.missing) != len(self.names):
            raise InputError(f"{len(self.missing)} missing flags for {len(self.names)} points.")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def lps(self) -> np.ndarray:
        return ras_to_lps(self.ras)

    def position(self, name: str) -> np.ndarray | None:
        """RAS position of the first point called ``name`` (None when absent)."""
        try:
            return self.ras[self.names.index(name)].copy()
        except ValueError:
            return None

    def subset(self, names: Sequence[str]) -> PointList:
        """The points called ``names`` (in that order); names absent here are skipped."""
        rows = [self.names.index(n) for n in names if n in self.names]
        return PointList(
            [self.names[r] for r in rows],
            self.ras[rows],
            [self.descriptions[r] for r in rows],
            self.name,
            self.missing[rows],
        )

    def require_points(self, what: str) -> PointList:
        """InputError when the list is empty (e.g. a reference without points)."""
        if not len(self):
            raise InputError(f"{what} holds no points; place at least one named point (control point) first.")
        return self

    def require_unique_names(self, what: str) -> PointList:
        seen: set[str] = set()
        dup = [n for n in self.names if n in seen or seen.add(n)]  # type: ignore[func-returns-value]
        if dup:
            raise InputError(f"{what} has several points called '{dup[0]}'; give each landmark its own name.")
        return self


def ras_to_ijk(ijk_to_ras: np.ndarray, ras: np.ndarray) -> np.ndarray:
    """Continuous voxel indices (i, j, k) of RAS points [N,3] on a grid."""
    inv = np.linalg.inv(np.asarray(ijk_to_ras, dtype=np.float64))
    return np.asarray(ras, dtype=np.float64).reshape(-1, 3) @ inv[:3, :3].T + inv[:3, 3]


def ijk_to_ras_points(ijk_to_ras: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    m = np.asarray(ijk_to_ras, dtype=np.float64)
    return np.asarray(ijk, dtype=np.float64).reshape(-1, 3) @ m[:3, :3].T + m[:3, 3]


def inside_volume(volume: Volume, ras: np.ndarray, margin_voxels: float = 0.5) -> np.ndarray:
    """Which points lie within the area the volume's voxels cover (half a voxel beyond the centres)."""
    ijk = ras_to_ijk(volume.ijk_to_ras, ras)
    size = np.asarray(volume.shape_ijk, dtype=np.float64)
    return np.all((ijk >= -margin_voxels) & (ijk <= size - 1 + margin_voxels), axis=1)


def check_points_inside(volume: Volume, points: PointList, what: str) -> None:
    """InputError naming the first point outside ``volume`` (a point placed on another scan, or LPS/RAS mixed up)."""
    inside = inside_volume(volume, points.ras)
    if not inside.all():
        n = int(np.flatnonzero(~inside)[0])
        raise InputError(
            f"Point '{points.names[n]}' of {what} (RAS {np.round(points.ras[n], 1).tolist()}) lies outside "
            f"its volume '{volume.name or 'volume'}'. Place the points on that scan (check that the markups "
            "belong to it and that their coordinate system, LPS or RAS, is right)."
        )
