"""The one result of a segmentation: a labelmap on the volume's grid, what each value means, and its provenance."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .classes import SegmentClass

if TYPE_CHECKING:
    from .probe import SegmentationProbe


@dataclass(frozen=True)
class ClassStats:
    name: str
    value: int
    voxels: int
    volume_ml: float


@dataclass
class SegmentationResult:
    labelmap: (
        np.ndarray
    )  # uint8 [k,j,i] on the volume grid; value v = the class whose .value is v, 0 = background
    ijk_to_ras: np.ndarray  # 4x4 of that grid
    classes: list[SegmentClass]
    probabilities: np.ndarray | None = None  # [K+1,k,j,i] float16: background, then the classes in order
    probe: SegmentationProbe | None = None  # the fitted or loaded probe that produced it
    warnings: list[str] = field(default_factory=list)

    def statistics(self) -> list[ClassStats]:
        """Voxel count and volume (mL) of every class (0 for a class never predicted)."""
        voxel_ml = float(abs(np.linalg.det(np.asarray(self.ijk_to_ras, dtype=np.float64)[:3, :3]))) / 1000.0
        counts = np.bincount(np.asarray(self.labelmap, dtype=np.uint8).ravel(), minlength=256)
        return [
            ClassStats(c.name, c.value, int(counts[c.value]), float(counts[c.value]) * voxel_ml)
            for c in self.classes
        ]
