"""What a query returns: hits best first (case, score, and for region queries the RAS location in the case)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .records import CaseRecord


@dataclass
class RetrievalHit:
    case: CaseRecord
    score: float  # cosine similarity in [-1, 1]
    ras: np.ndarray | None = None  # region hits: centre of the best-matching block (RAS mm)
    block_mm: float | None = None  # edge length of that block
    thumbnail: str | None = None  # PNG: the query region and this hit side by side

    @property
    def case_id(self) -> str:
        return self.case.case_id

    @property
    def path(self) -> str:
        return self.case.path

    def to_json(self) -> dict[str, Any]:
        """The CLI's --json entry: {"case_id", "path", "score"} (+ "ras" for a region hit, "thumbnail")."""
        out: dict[str, Any] = {
            "case_id": self.case_id,
            "path": self.path,
            "score": round(float(self.score), 6),
        }
        if self.ras is not None:
            out["ras"] = [round(float(v), 2) for v in self.ras]
        if self.thumbnail:
            out["thumbnail"] = self.thumbnail
        return out


@dataclass
class QueryResult:
    hits: list[RetrievalHit]
    query: str  # what was asked ("whole volume (mean)", "box centred at ...")
    embedding: str  # mean | cls | region
    region_center: np.ndarray | None = None  # RAS centre of the query region
    region_half_extent: np.ndarray | None = None  # half size of its RAS bounding box (mm)
    warnings: list[str] = field(default_factory=list)
    search_seconds: float = 0.0  # index search + exact re-scoring (features excluded)

    def to_json(self) -> list[dict[str, Any]]:
        return [h.to_json() for h in self.hits]

    def table(self) -> str:
        """A plain-text table for the terminal."""
        lines = [f"query: {self.query}", f"{'rank':>4}  {'score':>7}  {'case':<24} location (RAS mm)  path"]
        for n, h in enumerate(self.hits, 1):
            where = " ".join(f"{v:7.1f}" for v in h.ras) if h.ras is not None else "-"
            lines.append(f"{n:>4}  {h.score:7.4f}  {h.case_id:<24} {where}  {h.path}")
        return "\n".join(lines)
