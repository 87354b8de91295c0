"""Similar-case retrieval end to end: the one implementation behind `voxelfm index` / `voxelfm query` and Slicer.

    pipeline = RetrievalPipeline(ModelSpec(device="cpu"))
    pipeline.add_sources("cases/", expand_inputs(["archive/"]))           # resumable, torchrun-parallel
    result = pipeline.query("cases/", volume, k=5)                        # whole volume (pooled body tokens)
    result = pipeline.query("cases/", volume, k=5, region=BoxRegion.centred(c, (40, 40, 40)))
    result.hits[0].case_id, result.hits[0].score, result.hits[0].ras     # ras: where in that case

The pipeline owns what must agree between adding and querying: the backbone (a library remembers its model
and refuses any other), the preprocessing and feature spacing, and how tokens are pooled (RetrievalConfig).
Features come from the process-wide FeatureService (disk-cached), so a volume already seen by another module
or command is not recomputed.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..features.extract import model_identity
from ..features.service import ConfiguredPipeline
from ..features.spec import ModelSpec
from ..imaging.resample import resample_isotropic
from ..imaging.volume import Volume
from ..progress import CancelFlag, ProgressFn, check_cancel, no_progress
from .config import DEFAULT_GLOBAL, REGION, STANDARDISED, RetrievalConfig, check_kind
from .embeddings import CaseEmbeddings, embed_features, region_query
from .indexing import run_add
from .library import CaseLibrary
from .pooling import body_fraction, cls_vector, embedding_dim, global_vector, uses_body
from .records import CaseSource
from .regions import Region
from .result import QueryResult, RetrievalHit
from .search import Filter, search_global, search_region
from .thumbnails import write_thumbnails


class RetrievalPipeline(ConfiguredPipeline[RetrievalConfig | None]):
    """``RetrievalPipeline(spec, config, options, service)``: index cases into a library and query it."""

    @staticmethod
    def config_type() -> None:
        """No config named: the library's own settings (or the defaults for a new library)."""
        return None

    # ---- model and settings for a library

    def spec_for(self, library: CaseLibrary | None, local_rank: int | None = None) -> ModelSpec:
        """Our spec, with the library's model when none was named (and one GPU per torchrun rank)."""
        spec = self.spec
        if not spec.model and library is not None and library.model_reference:
            spec = spec.with_model(library.model_reference)
        if local_rank is not None and spec.device == "auto":
            if torch.cuda.is_available():
                spec = dataclasses.replace(spec, device=f"cuda:{local_rank}")
        return spec

    def config_for(self, library: CaseLibrary | None) -> RetrievalConfig:
        have = library.config if library is not None and library.identity is not None else None
        if have is not None and self.config is not None and self.config != have:
            raise InputError(
                f"The library {library.folder} was built with {have}; it cannot take embeddings made with "  # type: ignore[union-attr]
                f"{self.config}. Use the library's settings or a new library."
            )
        return have or self.config or RetrievalConfig()

    def check_model(self, library: CaseLibrary | None, spec: ModelSpec) -> dict[str, Any]:
        """Load the backbone and refuse it when the library holds another one; returns its identity."""
        backbone = self.service.backbone(spec)
        identity = model_identity(backbone)
        if library is not None and library.identity is not None and "orientation" not in library.preprocess:
            raise InputError(
                f"The library {library.folder} was made by an earlier version of VoxelFM (features on the stored "
                "array order, every token pooled); its embeddings cannot be compared with today's. Make a new "
                "library from the same images (`voxelfm index add NEW_FOLDER ...`)."
            )
        if library is not None:
            library.check_compatible(
                identity,
                embedding_dim(int(backbone.embed_dim), self.config_for(library)),
                self.model_preprocess(spec).to_dict(),
                self.config_for(library),
            )
        return identity

    # ---- embeddings

    def features(self, volume: Volume, spec: ModelSpec, config: RetrievalConfig, progress=None, cancel=None):
        """Features of ``volume`` through the shared service (at the library's feature spacing if set)."""
        source = volume
        s = config.feature_spacing_mm
        if s is not None and not np.allclose(volume.spacing, s, rtol=0.01):
            source = resample_isotropic(volume, s)
        return self.volume_features(source, spec, self.model_preprocess(spec), progress, cancel)

    @staticmethod
    def body(volume: Volume, feats, config: RetrievalConfig) -> np.ndarray | None:
        """The body share of each patch cell (None when the pooling does not use it)."""
        if not uses_body(config):
            return None
        return body_fraction(volume, feats.grid_to_ras, np.asarray(feats.patch).shape[:3])

    def embed(
        self, volume: Volume, spec: ModelSpec, config: RetrievalConfig, progress=None, cancel=None
    ) -> tuple[CaseEmbeddings, Any]:
        feats = self.features(volume, spec, config, progress, cancel)
        return embed_features(feats, config, self.body(volume, feats, config)), feats

    # ---- adding cases

    def add_sources(self, library: str | Path, sources, progress=None, cancel=None, dist=None):
        """Add image files / DICOM folders / volumes (CaseSource list); resumable; torchrun-aware. AddReport."""
        return run_add(self, Path(library), list(sources), progress or no_progress, cancel, dist)

    def add_volume(
        self,
        library: str | Path,
        volume: Volume,
        case_id: str = "",
        report=None,
        findings=None,
        path: str = "",
    ):
        """Add one in-memory volume (e.g. a Slicer node; ``path``: the file it was loaded from, if any).

        Returns its CaseRecord (the existing one when these voxels / this file were added before)."""
        source = CaseSource(path=path, volume=volume, case_id=case_id, report=report, findings=findings)
        self.add_sources(library, [source]).raise_failures()
        with CaseLibrary.open(library) as lib:
            return lib.case_by_source(source.key)

    # ---- queries

    def query(
        self,
        library: str | Path | CaseLibrary,
        volume: Volume,
        k: int = 10,
        region: Region | None = None,
        embedding: str = DEFAULT_GLOBAL,
        where: Filter = None,
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
    ) -> QueryResult:
        """The ``k`` nearest cases of ``volume`` (or of ``region`` in it), best first."""
        progress = progress or no_progress
        if int(k) < 1:
            raise InputError(f"k must be at least 1, got {k}.")
        lib = library if isinstance(library, CaseLibrary) else CaseLibrary.open(library)
        try:
            return self._query(lib, volume, int(k), region, check_kind(embedding), where, progress, cancel)
        finally:
            if lib is not library:
                lib.close()

    def _query(self, lib, volume, k, region, embedding, where, progress, cancel) -> QueryResult:
        if lib.count() == 0:
            raise InputError(
                f"The case library {lib.folder} has no cases; add some with `voxelfm index add`."
            )
        spec = self.spec_for(lib)
        self.check_model(lib, spec)
        check_cancel(cancel)
        config = self.config_for(lib)
        feats = self.features(volume, spec, config, lambda f, m: progress(0.9 * f, m), cancel)
        check_cancel(cancel)
        progress(0.92, "searching the library")
        t = time.perf_counter()
        body = self.body(volume, feats, config)
        notes: list[str] = []
        if region is not None:
            vector, scale = region_query(feats, region, volume, config, body)
            hits = search_region(lib, vector, scale, k, where)
            result = QueryResult(hits, region.describe(), REGION, region.center, region.half_extent)
        else:
            vector = cls_vector(feats, config) if embedding == "cls" else global_vector(feats, config, body)
            standardise = embedding == "mean" and config.pooling == STANDARDISED
            hits = search_global(lib, vector, embedding, k, where, config.centring, notes, standardise)
            result = QueryResult(hits, f"whole volume ({embedding})", embedding)
        result.warnings += notes
        if len(hits) < k:
            result.warnings.append(f"The library holds only {len(hits)} matching case(s) (k={k}).")
        result.search_seconds = time.perf_counter() - t
        progress(1.0, f"{len(hits)} similar cases")
        return result

    def similar_cases_with_reports(
        self, library: str | Path | CaseLibrary, volume: Volume, k: int = 5, region: Region | None = None
    ) -> list[RetrievalHit]:
        """The ``k`` nearest cases that carry a report (for report drafting); each hit's case has
        ``report`` and ``findings``."""
        return self.query(library, volume, k, region, where=lambda rec: rec.has_report).hits

    def thumbnails(self, result: QueryResult, volume: Volume, out_dir: str | Path) -> list[Path]:
        """PNG per hit: the query region (or volume centre) beside the hit's matching place; sets hit.thumbnail."""
        return write_thumbnails(result, volume, Path(out_dir))
