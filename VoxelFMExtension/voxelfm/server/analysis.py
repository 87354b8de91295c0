"""Localisation, retrieval and report jobs, run with the core pipelines exactly as the CLI runs them.

localize: ``LocalisationPipeline(spec, config, options)``: ``.templates(references)`` then ``.transfer(target,
templates)`` (the `voxelfm localize --reference` calls). query: ``RetrievalPipeline(spec, options=options)
.query(folder, volume, k, None, embedding, where)``. index-add: ``RetrievalPipeline.add_volume``. report:
``ReportPipeline(spec, template, consensus, options).draft(volume, (), segmentation, library_neighbours(folder))``.
Libraries are named by id (server.libraries); volumes by their address in the volume store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..client.analysis_payloads import ANALYSIS_CODECS, localisation_frame, points_from_plain, query_frame
from ..client.wire import Frame
from ..errors import InputError
from ..features.spec import FeatureOptions, ModelSpec
from ..imaging.volume import Volume
from ..localize.config import TransferConfig
from ..localize.pipeline import LocalisationPipeline, Reference
from ..report.library_source import library_neighbours
from ..report.neighbours import ConsensusConfig
from ..report.pipeline import ReportPipeline
from ..report.segmentation_files import SegmentationData, SegmentRef
from ..report.template_files import load_template
from ..retrieval.pipeline import RetrievalPipeline
from .jobs import Job
from .libraries import library_folder
from .models import JobRequest


def _needs(part: Any, kind: str, name: str) -> Any:
    if part is None:
        raise InputError(f"a {kind} job needs '{name}'.")
    return part


def run_localize(job: Job, volume: Volume, spec: ModelSpec, options: FeatureOptions, fetch) -> bytes:
    req: JobRequest = job.request
    body = _needs(req.localize, "localize", "localize")
    try:
        config = TransferConfig.from_dict(body.config)
    except (TypeError, ValueError) as exc:
        raise InputError(f"localisation config: {exc}.") from None
    refs = [Reference(fetch(r.volume), points_from_plain(r.points.model_dump())) for r in body.references]
    pipeline = LocalisationPipeline(spec, config, options)
    templates = pipeline.templates(refs, lambda f, m: job.progress(0.5 * f, m), job.cancel)
    result = pipeline.transfer(volume, templates, lambda f, m: job.progress(0.5 + 0.5 * f, m), job.cancel)
    return localisation_frame(result).encode(ANALYSIS_CODECS)


def run_query(
    job: Job, volume: Volume, spec: ModelSpec, options: FeatureOptions, libraries: dict[str, Path]
) -> bytes:
    body = _needs(job.request.query, "query", "query")
    folder = library_folder(libraries, body.library)
    where = (lambda rec: rec.has_report) if body.with_reports else None
    pipeline = RetrievalPipeline(spec, options=options)
    result = pipeline.query(
        folder, volume, body.k, None, body.embedding, where, progress=job.progress, cancel=job.cancel
    )
    return query_frame(result).encode(ANALYSIS_CODECS)


def run_index_add(
    job: Job, volume: Volume, spec: ModelSpec, options: FeatureOptions, libraries: dict[str, Path]
) -> bytes:
    body = _needs(job.request.index_add, "index-add", "index_add")
    folder = library_folder(libraries, body.library)
    if body.name:
        volume = Volume(volume.array, volume.ijk_to_ras, body.name)
    record = RetrievalPipeline(spec, options=options).add_volume(
        folder, volume, body.case_id, body.report, body.findings
    )
    return Frame({"case_id": record.case_id, "added_at": record.added_at}, {}).encode()


def run_report(
    job: Job,
    volume: Volume,
    spec: ModelSpec,
    options: FeatureOptions,
    libraries: dict[str, Path],
    fetch,
) -> bytes:
    body = _needs(job.request.report, "report", "report")
    if body.template and any(sep in body.template for sep in ("/", "\\", ".")):
        raise InputError(
            f"report template {body.template!r} looks like a file; the server drafts with its built-in "
            "templates only: name one, or draft on this computer."
        )
    consensus = ConsensusConfig(k=body.neighbours, temperature=body.temperature, min_support=body.min_support)
    pipeline = ReportPipeline(
        spec, load_template(body.template) if body.template else None, consensus, options
    )
    neighbours = None
    if body.library:
        folder = library_folder(libraries, body.library)
        neighbours = library_neighbours(str(folder), pipeline.spec, pipeline.service, pipeline.options)
    segmentation = None
    if body.segmentation:
        seg = body.segmentation
        layers = [Volume(v.array, v.ijk_to_ras, seg.name) for v in map(fetch, seg.layers)]
        if any(not 0 <= s.layer < len(layers) for s in seg.segments):
            raise InputError(f"segments must name layers 0..{len(layers) - 1}.")
        refs = [SegmentRef(s.name, s.segment_id, s.layer, s.value) for s in seg.segments]
        segmentation = SegmentationData(layers, refs, seg.source)
    draft = pipeline.draft(volume, (), segmentation, neighbours, None, job.progress, job.cancel)
    return Frame({"draft": draft.to_dict()}, {}).encode()
