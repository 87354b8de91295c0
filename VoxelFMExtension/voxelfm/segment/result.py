"""The one result of a segmentation: a labelmap on the volume's grid, what each value means, and its provenance."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

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

    def summary(self) -> dict[str, Any]:
        """Everything but the arrays and the probe, as plain data (what a front end shows or sends with the
        labelmap): the classes, the warnings and each class's statistics."""
        return {
            "classes": [c.to_dict() for c in self.classes],
            "warnings": list(self.warnings),
            "statistics": [asdict(s) for s in self.statistics()],
        }

    @classmethod
    def from_summary(
        cls, labelmap: np.ndarray, ijk_to_ras: np.ndarray, d: dict[str, Any]
    ) -> SegmentationResult:
        """A result received as its labelmap + geometry + ``summary()`` (statistics are recomputed)."""
        classes = [SegmentClass.from_dict(c) for c in d.get("classes", [])]
        return cls(
            labelmap, np.asarray(ijk_to_ras, dtype=np.float64), classes, warnings=list(d.get("warnings", []))
        )
