"""The one result of localisation: named points in the target (RAS) with a confidence each, and provenance."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .points import PointList

NOT_FOUND = "not found (outside the target's field of view)"


def confidence_text(value: float, missing: bool = False) -> str:
    """The description written on each predicted control point (the CLI / Slicer contract)."""
    return f"{NOT_FOUND}, confidence {value:.2f}" if missing else f"confidence {value:.2f}"


@dataclass
class LocalisationResult:
    points: PointList  # predictions; descriptions = confidence_text(confidence)
    confidence: np.ndarray  # [N] in [0, 1]
    method: str  # "one-shot" or "probe"
    details: dict[str, Any] = field(default_factory=dict)  # per-point diagnostics (coarse position, scores)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def found(self) -> np.ndarray:
        """[N] bool: the points placed in the target (the others are ``points.missing``)."""
        return ~self.points.missing

    @classmethod
    def build(
        cls, names, ras, confidence, method: str, name: str = "", missing=None, **kw
    ) -> LocalisationResult:
        """A result; a ``missing`` point (not found in the target) has confidence 0 and says so."""
        conf = np.clip(np.asarray(confidence, dtype=np.float64).reshape(-1), 0.0, 1.0)
        lost = np.zeros(len(conf), bool) if missing is None else np.asarray(missing, bool).reshape(-1)
        conf = np.where(lost, 0.0, conf)
        texts = [confidence_text(c, m) for c, m in zip(conf, lost, strict=True)]
        points = PointList(list(names), np.asarray(ras).reshape(-1, 3), texts, name, lost)
        return cls(points, conf, method, **kw)

    def distances_to(self, truth: PointList) -> dict[str, float]:
        """Distance (mm) from each prediction to the point of the same name in ``truth`` (names in both)."""
        out = {}
        for n, name in enumerate(self.points.names):
            pos = truth.position(name)
            if pos is not None:
                out[name] = float(np.linalg.norm(self.points.ras[n] - pos))
        return out
