"""Similar cases from a retrieval case library (voxelfm.retrieval) as the draft's neighbour source.

Uses only the library's public API: ``RetrievalPipeline.similar_cases_with_reports`` (whole-volume
embedding, cosine similarity, cases that carry a report) and ``CaseLibrary``. The library's own model is used
when the pipeline names none, and a library of another backbone is refused by the retrieval pipeline.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..features.service import FeatureService
from ..features.spec import FeatureOptions, ModelSpec
from ..imaging.volume import Volume
from ..retrieval.library import CaseLibrary
from ..retrieval.pipeline import RetrievalPipeline
from .neighbours import Neighbour

NO_REPORTS = (
    "The case library {folder} has {n} case(s) but none has a report text, so there is nothing to draft from. "
    "Attach reports with `voxelfm index add {folder} IMAGE --report REPORT.txt` (or a manifest with a 'report' "
    "column), or draft from probes and segmentations only."
)


class LibraryNeighbours:
    """``NeighbourSource`` over a case library folder (or an open ``CaseLibrary``); a folder is opened again
    for each draft (readers need no lock)."""

    def __init__(
        self,
        library: Any,
        spec: ModelSpec | None = None,
        service: FeatureService | None = None,
        options: FeatureOptions | None = None,
        exclude: Collection[str] = (),
    ) -> None:
        self.library = library
        self.retrieval = RetrievalPipeline(spec, options=options, service=service)
        self.exclude = frozenset(exclude)  # case ids never returned (leave-one-out evaluation)

    def _open(self):
        if isinstance(self.library, CaseLibrary):
            return self.library, False
        return CaseLibrary.open(Path(os.fspath(self.library))), True

    def check_reports(self, lib) -> None:
        """InputError when the library is empty or none of its cases has a report."""
        cases = lib.cases()
        if not cases:
            raise InputError(
                f"The case library {lib.folder} has no cases; add some with `voxelfm index add`."
            )
        if not any(c.has_report for c in cases):
            raise InputError(NO_REPORTS.format(folder=lib.folder, n=len(cases)))

    def neighbours(self, volume: Volume, k: int) -> list[Neighbour]:
        lib, opened = self._open()
        try:
            self.check_reports(lib)
            if self.exclude:
                keep = lambda rec: rec.has_report and rec.case_id not in self.exclude  # noqa: E731
                hits = self.retrieval.query(lib, volume, k, where=keep).hits
            else:
                hits = self.retrieval.similar_cases_with_reports(lib, volume, k)
        finally:
            if opened:
                lib.close()
        return [
            Neighbour(h.case_id, float(h.score), h.case.report or "", h.case.findings, h.case.abs_path)
            for h in hits
        ]


# The name the CLI, the Slicer logic and the benchmarks call.
library_neighbours = LibraryNeighbours
