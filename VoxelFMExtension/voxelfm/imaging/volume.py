"""The one in-memory image type of the core: a voxel array with exact geometry.

Conventions (Slicer's): ``array`` is indexed ``[k, j, i]`` = (z, y, x) slices/rows/columns, and
``ijk_to_ras`` maps homogeneous (i, j, k, 1) — i along array axis 2 — to RAS millimetres. Any
direction matrix (oblique, flipped) is allowed; nothing downstream assumes identity direction.
RAS <-> LPS conversion happens only in ``voxelfm.imaging.io``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Volume:
    array: np.ndarray  # [k, j, i] voxel values (HU for CT)
    ijk_to_ras: np.ndarray = field(default_factory=lambda: np.eye(4))  # 4x4
    name: str = ""

    def __post_init__(self) -> None:
        self.ijk_to_ras = np.asarray(self.ijk_to_ras, dtype=np.float64)
        if self.ijk_to_ras.shape != (4, 4):
            raise ValueError(f"ijk_to_ras must be 4x4, got {self.ijk_to_ras.shape}")

    @property
    def shape_ijk(self) -> tuple[int, int, int]:
        """Voxel counts along i, j, k (x, y, z)."""
        k, j, i = self.array.shape[-3:]
        return int(i), int(j), int(k)

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along i, j, k (column norms of the 3x3 part)."""
        return np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)

    @property
    def direction(self) -> np.ndarray:
        """Unit direction cosines (3x3, columns = i, j, k axes in RAS)."""
        return self.ijk_to_ras[:3, :3] / self.spacing

    def content_hash(self) -> str:
        """sha256 over voxel bytes, dtype, shape and geometry: the feature-cache key of this image."""
        h = hashlib.sha256()
        arr = np.ascontiguousarray(self.array)
        h.update(str((arr.dtype.str, arr.shape)).encode())
        h.update(arr.tobytes())
        h.update(np.round(self.ijk_to_ras, 6).astype(np.float64).tobytes())
        return h.hexdigest()
