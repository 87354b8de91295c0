"""Localisation, retrieval and report drafting through a server, with the same results as the local pipelines.

``remote_localize`` returns the LocalisationResult of ``LocalisationPipeline.transfer``; ``remote_query`` the
QueryResult of ``RetrievalPipeline.query`` on the server's library (named by id); ``remote_report`` the
ReportDraft of ``ReportPipeline.draft``. Each takes a RemoteRun (``.run``: the server, model, feature options,
progress and cancel) and its own inputs. Every volume (target, references, segmentation layers) is uploaded
once, by content hash; points, settings and results travel as plain data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..errors import InputError
from ..imaging.volume import Volume
from ..localize.config import TransferConfig
from ..localize.pipeline import Reference
from ..localize.probe import LocalisationProbe
from ..localize.result import LocalisationResult
from ..localize.template import LandmarkTemplate
from ..report.draft import ReportDraft
from ..report.template import ReportTemplate
from ..retrieval.records import clean_id
from ..retrieval.regions import Region
from ..retrieval.result import QueryResult
from .analysis_payloads import (
    findings_probe_to_plain,
    localisation_from_frame,
    localisation_probe_files,
    points_to_plain,
    query_from_frame,
    region_to_plain,
    report_template_to_plain,
    template_text,
    templates_from_frame,
    write_frame_thumbnails,
)
from .client import VoxelFMClient
from .run import RemoteRun, run_capability
from .wire import decode_frame, volume_from_frame


def remote_localize(
    run: RemoteRun,
    target: Volume,
    references: Sequence[Reference | LandmarkTemplate],
    config: TransferConfig,
    keep_templates: bool = False,
) -> tuple[list[LandmarkTemplate], LocalisationResult]:
    """(the templates built, when ``keep_templates``; the result): ``pipeline.templates`` + ``.transfer``."""
    refs = [
        {"volume": run.client.ensure_volume(r.volume), "points": points_to_plain(r.points)}
        for r in references
        if isinstance(r, Reference)
    ]
    saved = [template_text(t) for t in references if isinstance(t, LandmarkTemplate)]
    localize = {
        "references": refs,
        "templates": saved,
        "config": config.to_dict(),
        "return_templates": keep_templates,
    }
    others = [r.volume for r in references if isinstance(r, Reference)]
    frame = run_capability(run, "localize", target, {"localize": localize}, others)
    return templates_from_frame(frame), localisation_from_frame(frame)


def remote_localize_probe(run: RemoteRun, target: Volume, probe: LocalisationProbe) -> LocalisationResult:
    """``LocalisationPipeline(spec).apply_probe(target, probe)`` on the server; the probe's files travel."""
    payload = {"localize": {"probe": localisation_probe_files(probe)}}
    return localisation_from_frame(run_capability(run, "localize", target, payload))


def remote_query(
    run: RemoteRun,
    library: str,
    volume: Volume,
    k: int,
    embedding: str,
    with_reports: bool,
    region: Region | None = None,
    thumbnails: str | Path | None = None,
) -> QueryResult:
    """``RetrievalPipeline.query`` on the server's library ``library`` (an id); a mask region is uploaded. With
    ``thumbnails`` (a folder) the server renders a PNG per hit from its cases' images (``write_thumbnails``, as
    `voxelfm query --thumbnails` does) and they are written there under the same names."""
    query = {
        "library": library,
        "k": int(k),
        "embedding": embedding,
        "with_reports": bool(with_reports),
        "thumbnails": thumbnails is not None,
    }
    if region is not None:
        query["region"] = region_to_plain(region, run.client.ensure_volume)
    frame = run_capability(run, "query", volume, {"query": query})
    result = query_from_frame(frame)
    for hit in result.hits:  # which server library a hit is of, to open its image (``remote_case_volume``)
        hit.case.info["server_library"] = library
    if thumbnails is not None:
        write_frame_thumbnails(frame, result, thumbnails)
    return result


def remote_index_add(
    run: RemoteRun, library: str, volume: Volume, case_id: str, report: str | None, findings: Any
) -> dict[str, Any]:
    """Add one volume to the server's library ``library``; returns {"case_id", "added_at"}."""
    add = {
        "library": library,
        "case_id": case_id,
        "name": volume.name,
        "report": report,
        "findings": findings,
    }
    return run_capability(run, "index-add", volume, {"index_add": add}).meta


def remote_report(
    run: RemoteRun,
    library: str | None,
    volume: Volume,
    segmentation: Any,
    template: ReportTemplate | None,
    consensus: dict[str, float],
    probes: Sequence[Any] = (),
) -> ReportDraft:
    """``segmentation``: a SegmentationData (its label layers are uploaded like volumes) or None; ``template``
    and the findings ``probes`` (paths or loaded) travel as their contents (``report_template_to_plain``,
    ``findings_probe_to_plain``)."""
    seg = None
    if segmentation is not None:
        seg = {
            "layers": [run.client.ensure_volume(layer) for layer in segmentation.layers],
            "segments": [
                {"name": s.name, "segment_id": s.segment_id, "layer": s.layer, "value": s.value}
                for s in segmentation.segments
            ],
            "name": segmentation.layers[0].name,
            "source": segmentation.source,
        }
    report = {
        "library": library,
        "segmentation": seg,
        "probes": [findings_probe_to_plain(p) for p in probes],
        **report_template_to_plain(template),
        **consensus,
    }
    layers = list(segmentation.layers) if segmentation is not None else []
    frame = run_capability(run, "report", volume, {"report": report}, layers)
    return ReportDraft.from_dict(frame.meta["draft"])


def remote_library_listing(client: VoxelFMClient, library: str) -> dict[str, Any]:
    """{"library", "model", "dim", "cases": [{"case_id", "path", ..., "has_report"}]} of a server's library."""
    client.check()
    return client.connection.request("GET", f"/libraries/{quote(library, safe='')}").json()


def remote_library_ids(client: VoxelFMClient) -> list[str]:
    client.check()
    return list(client.connection.request("GET", "/libraries").json())


def remote_case_volume(client: VoxelFMClient, library: str, case_id: str) -> Volume:
    """The image of case ``case_id`` of the server's library ``library`` (named by ids, never a server path), as
    the server holds it; ServerRequestError (HTTP 404) when the case is unknown or its image is gone."""
    if clean_id(case_id) != case_id:
        raise InputError(
            f"{case_id!r} is not a case id (letters, digits, '.', '_', '-'); see `voxelfm index list`."
        )
    client.check()
    path = f"/libraries/{quote(library, safe='')}/cases/{quote(case_id, safe='')}/volume"
    return volume_from_frame(decode_frame(client.connection.request("GET", path).body), case_id)
