"""Query regions in RAS millimetres: an (oriented) box, a sphere (point + radius) or a mask on any grid.

Each region is turned into sample points in RAS, so every shape is handled the same way downstream (pooling
patch tokens, checking the region lies in the volume, drawing thumbnails) and no grid alignment is assumed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..imaging.volume import Volume

MAX_POINTS = 200_000  # sample points per region (the step grows for very large regions)


@dataclass(frozen=True)
class BoxRegion:
    """A box of ``size`` mm along its own axes; ``to_ras`` maps box coordinates (mm, centred) to RAS."""

    to_ras: np.ndarray
    size: tuple[float, float, float]

    def __post_init__(self) -> None:
        if np.asarray(self.to_ras).shape != (4, 4) or not np.all(np.isfinite(self.to_ras)):
            raise InputError("An ROI box needs a finite 4x4 box-to-RAS matrix.")
        if len(self.size) != 3 or min(self.size) <= 0 or not np.all(np.isfinite(self.size)):
            raise InputError(f"An ROI box needs three positive sizes in mm, got {list(self.size)}.")

    @classmethod
    def centred(cls, center_ras, size_mm) -> BoxRegion:
        m = np.eye(4)
        m[:3, 3] = np.asarray(center_ras, dtype=np.float64)
        return cls(m, tuple(float(s) for s in size_mm))  # type: ignore[arg-type]

    @property
    def center(self) -> np.ndarray:
        return np.asarray(self.to_ras, dtype=np.float64)[:3, 3].copy()

    @property
    def side_mm(self) -> float:
        """Edge of the cube with the region's volume (chooses the block scale a query is compared with)."""
        return float(np.cbrt(np.prod(self.size)))

    @property
    def half_extent(self) -> np.ndarray:
        """Half size of the region's RAS bounding box (mm)."""
        axes = np.abs(np.asarray(self.to_ras, dtype=np.float64)[:3, :3])
        return axes @ (np.asarray(self.size) / 2)

    def points(self, step_mm: float) -> np.ndarray:
        size = np.asarray(self.size, dtype=np.float64)
        step = _step_for(np.prod(size), step_mm)
        axes = [_axis_samples(s, step) for s in size]
        local = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
        return _apply(self.to_ras, local)

    def describe(self) -> str:
        c, s = np.round(self.center, 1).tolist(), [round(float(v), 1) for v in self.size]
        return f"box centred at RAS {c} of size {s} mm"


@dataclass(frozen=True)
class SphereRegion:
    """A ball of ``radius`` mm around a point (a point query)."""

    center_ras: tuple[float, float, float]
    radius: float

    def __post_init__(self) -> None:
        if not np.all(np.isfinite(self.center_ras)) or len(self.center_ras) != 3:
            raise InputError(f"A point needs three finite RAS coordinates, got {list(self.center_ras)}.")
        if not np.isfinite(self.radius) or self.radius <= 0:
            raise InputError(f"The radius around a point must be a positive number of mm, got {self.radius}.")

    @property
    def center(self) -> np.ndarray:
        return np.asarray(self.center_ras, dtype=np.float64)

    @property
    def side_mm(self) -> float:
        return float(np.cbrt(4.0 / 3.0 * np.pi) * self.radius)

    @property
    def half_extent(self) -> np.ndarray:
        return np.full(3, float(self.radius))

    def points(self, step_mm: float) -> np.ndarray:
        step = _step_for((2 * self.radius) ** 3, step_mm)
        axis = _axis_samples(2 * self.radius, step)
        local = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
        local = local[np.linalg.norm(local, axis=1) <= self.radius] if len(local) > 1 else local
        return local + self.center

    def describe(self) -> str:
        return f"point RAS {np.round(self.center, 1).tolist()} with radius {self.radius:g} mm"


@dataclass(frozen=True)
class MaskRegion:
    """Non-zero voxels of a mask [k, j, i] on any grid (a segment, a label file)."""

    mask: np.ndarray
    ijk_to_ras: np.ndarray
    name: str = "mask"

    def __post_init__(self) -> None:
        if np.asarray(self.mask).ndim != 3:
            raise InputError(f"A region mask must be a 3D array, got shape {np.asarray(self.mask).shape}.")
        if not np.asarray(self.mask).any():
            raise InputError(f"The region mask '{self.name}' is empty; paint or select a non-empty region.")

    def _voxels(self) -> np.ndarray:
        kji = np.argwhere(np.asarray(self.mask) != 0)
        return _apply(self.ijk_to_ras, kji[:, ::-1].astype(np.float64))

    @property
    def center(self) -> np.ndarray:
        return self._voxels().mean(axis=0)

    @property
    def side_mm(self) -> float:
        voxel = abs(float(np.linalg.det(np.asarray(self.ijk_to_ras, dtype=np.float64)[:3, :3])))
        return float(np.cbrt(np.count_nonzero(self.mask) * voxel))

    @property
    def half_extent(self) -> np.ndarray:
        ras = self._voxels()
        return (ras.max(axis=0) - ras.min(axis=0)) / 2 + np.linalg.norm(
            self.ijk_to_ras[:3, :3], axis=0
        ).max() / 2

    def points(self, step_mm: float) -> np.ndarray:
        ras = self._voxels()
        if len(ras) > MAX_POINTS:
            ras = ras[:: int(np.ceil(len(ras) / MAX_POINTS))]
        return ras

    def describe(self) -> str:
        return f"{self.name} ({int(np.count_nonzero(self.mask))} voxels around RAS {np.round(self.center, 1).tolist()})"


Region = BoxRegion | SphereRegion | MaskRegion


def _step_for(volume_mm3: float, step_mm: float) -> float:
    return max(float(step_mm), float(np.cbrt(volume_mm3 / MAX_POINTS)))


def _axis_samples(size: float, step: float) -> np.ndarray:
    n = max(1, int(np.ceil(size / step)))
    return (np.arange(n) + 0.5) * (size / n) - size / 2


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    return points @ m[:3, :3].T + m[:3, 3]


def volume_index(volume: Volume, ras: np.ndarray) -> np.ndarray:
    """Continuous (i, j, k) voxel indices of RAS points."""
    return _apply(np.linalg.inv(volume.ijk_to_ras), np.asarray(ras, dtype=np.float64))


def points_in_volume(region: Region, volume: Volume, step_mm: float) -> np.ndarray:
    """The region's sample points that lie inside ``volume``; InputError when none does."""
    pts = region.points(step_mm)
    idx = volume_index(volume, pts)
    size = np.asarray(volume.shape_ijk, dtype=np.float64)
    inside = np.all((idx >= -0.5) & (idx <= size - 0.5), axis=1)
    if not inside.any():
        lo = _apply(volume.ijk_to_ras, np.array([[-0.5, -0.5, -0.5]]))[0]
        hi = _apply(volume.ijk_to_ras, (size - 0.5)[None])[0]
        box = ", ".join(f"{min(a, b):.0f}..{max(a, b):.0f}" for a, b in zip(lo, hi, strict=True))
        raise InputError(
            f"The query region ({region.describe()}) lies outside the volume '{volume.name}' (RAS extent "
            f"{box} mm); place the ROI or point on the image."
        )
    return pts[inside]
