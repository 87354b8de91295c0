"""Localisation, retrieval and report jobs, run with the core pipelines exactly as the CLI runs them.

localize: ``LocalisationPipeline(spec, config, options)``: ``.templates(references or templates)`` then
``.transfer(target, templates)`` (the `voxelfm localize --reference / --template` calls), or
``LocalisationPipeline(spec, None, options).apply_probe(target, probe)`` (`--probe`). query:
``RetrievalPipeline(spec, options=options).query(folder, volume, k, region, embedding, where)``. index-add:
``RetrievalPipeline.add_volume``. report:
``ReportPipeline(spec, template, consensus, options).draft(volume, (), segmentation, library_neighbours(folder))``.
Libraries are named by id (server.libraries); volumes by their address in the volume store.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ..client.analysis_payloads import (
    ANALYSIS_CODECS,
    findings_probe_from_plain,
    localisation_frame,
    localisation_probe_from_files,
    points_from_plain,
    query_frame,
    region_from_plain,
    template_from_text,
    thumbnails_to_frame,
)
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
from ..report.template import ReportTemplate
from ..report.template_files import load_template, template_from_dict
from ..retrieval.pipeline import RetrievalPipeline
from ..retrieval.thumbnails import write_thumbnails
from .jobs import Job
from .libraries import library_folder


def _needs(part: Any, kind: str, name: str) -> Any:
    if part is None:
        raise InputError(f"a {kind} job needs '{name}'.")
    return part


def check_model_name(model: str, what: str = "model") -> str:
    """Clients name models by registry id, never by a path on the server (nor through a probe's record)."""
    if any(sep in model for sep in ("/", "\\")) or model.endswith((".pth", ".pt", ".safetensors", ".yaml")):
        raise InputError(
            f"{what} {model!r} looks like a path; the server loads registry models only (see `voxelfm "
            "models`): name one with --model."
        )
    return model


def run_localize(job: Job, volume: Volume, spec: ModelSpec, options: FeatureOptions, fetch) -> bytes:
    """One-shot from references / templates (templates(), then transfer(), as the CLI), or apply a probe."""
    body = _needs(job.request.localize, "localize", "localize")
    if body.probe is not None:
        if body.references or body.templates:
            raise InputError("a localize job takes references / templates or a probe, not both.")
        probe = localisation_probe_from_files(body.probe.model_dump(by_alias=True))
        if not spec.model:  # the pipeline will load the probe's recorded backbone: a registry id here too
            check_model_name(spec.for_record(probe).model, "the probe's recorded backbone")
        result = LocalisationPipeline(spec, None, options).apply_probe(
            volume, probe, job.progress, job.cancel
        )
        return localisation_frame(result).encode(ANALYSIS_CODECS)
    if not (body.references or body.templates):
        raise InputError("a localize job needs references (scans with points), templates or a probe.")
    try:
        config = TransferConfig.from_dict(body.config)
    except (TypeError, ValueError) as exc:
        raise InputError(f"localisation config: {exc}.") from None
    refs: list = [
        Reference(fetch(r.volume), points_from_plain(r.points.model_dump())) for r in body.references
    ]
    refs += [template_from_text(t) for t in body.templates]
    pipeline = LocalisationPipeline(spec, config, options)
    templates = pipeline.templates(refs, lambda f, m: job.progress(0.5 * f, m), job.cancel)
    result = pipeline.transfer(volume, templates, lambda f, m: job.progress(0.5 + 0.5 * f, m), job.cancel)
    return localisation_frame(result, templates if body.return_templates else None).encode(ANALYSIS_CODECS)


def run_query(
    job: Job, volume: Volume, spec: ModelSpec, options: FeatureOptions, libraries: dict[str, Path], fetch
) -> bytes:
    body = _needs(job.request.query, "query", "query")
    folder = library_folder(libraries, body.library)
    where = (lambda rec: rec.has_report) if body.with_reports else None
    region = region_from_plain(body.region.model_dump(), fetch) if body.region is not None else None
    pipeline = RetrievalPipeline(spec, options=options)
    result = pipeline.query(
        folder, volume, body.k, region, body.embedding, where, progress=job.progress, cancel=job.cancel
    )
    if not body.thumbnails:
        return query_frame(result).encode(ANALYSIS_CODECS)
    with tempfile.TemporaryDirectory() as tmp:  # the PNGs `voxelfm query --thumbnails` writes, sent back
        written = write_thumbnails(result, volume, Path(tmp))
        frame = query_frame(result)
        thumbnails_to_frame(frame, result, written)
    return frame.encode(ANALYSIS_CODECS)


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
    consensus = ConsensusConfig(k=body.neighbours, temperature=body.temperature, min_support=body.min_support)
    pipeline = ReportPipeline(spec, _report_template(body), consensus, options)
    probes = [findings_probe_from_plain(p.model_dump(by_alias=True)) for p in body.probes]
    if not spec.model:  # each probe's recorded backbone will be loaded: a registry id here too
        for p in probes:
            check_model_name(spec.for_record(p.probe).model, f"probe {p.name}'s recorded backbone")
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
    draft = pipeline.draft(volume, probes, segmentation, neighbours, None, job.progress, job.cancel)
    return Frame({"draft": draft.to_dict()}, {}).encode()


def _report_template(body: Any) -> ReportTemplate | None:
    """A built-in template by name, or the client's own template (its parsed contents; never a server path)."""
    if body.template and body.template_file:
        raise InputError("a report job takes a template name or a template file, not both.")
    if body.template_file is not None:
        return template_from_dict(body.template_file.mapping, body.template_file.source)
    if body.template and any(sep in body.template for sep in ("/", "\\", ".")):
        raise InputError(
            f"report template {body.template!r} looks like a path; name a built-in template, or send the "
            "template's contents (the client does this for a file of its computer)."
        )
    return load_template(body.template) if body.template else None
