"""The one result of localisation: named points in the target (RAS) with a confidence each, and provenance."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .points import PointList


def confidence_text(value: float) -> str:
    """The description written on each predicted control point (the CLI / Slicer contract)."""
    return f"confidence {value:.2f}"


@dataclass
class LocalisationResult:
    points: PointList  # predictions; descriptions = confidence_text(confidence)
    confidence: np.ndarray  # [N] in [0, 1]
    method: str  # "one-shot" or "probe"
    details: dict[str, Any] = field(default_factory=dict)  # per-point diagnostics (coarse position, scores)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @classmethod
    def build(cls, names, ras, confidence, method: str, name: str = "", **kw) -> LocalisationResult:
        conf = np.clip(np.asarray(confidence, dtype=np.float64).reshape(-1), 0.0, 1.0)
        points = PointList(
            list(names), np.asarray(ras).reshape(-1, 3), [confidence_text(c) for c in conf], name
        )
        return cls(points, conf, method, **kw)

    def distances_to(self, truth: PointList) -> dict[str, float]:
        """Distance (mm) from each prediction to the point of the same name in ``truth`` (names in both)."""
        out = {}
        for n, name in enumerate(self.points.names):
            pos = truth.position(name)
            if pos is not None:
                out[name] = float(np.linalg.norm(self.points.ras[n] - pos))
        return out
