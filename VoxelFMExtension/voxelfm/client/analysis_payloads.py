"""Plain data <-> the core types of localisation, retrieval and report drafting, both directions in one place.

Points travel as names, RAS positions (JSON floats round-trip float64 exactly), descriptions and missing
flags; a localisation result as its points, confidences, method and warnings; a query result as its hits'
records (case id, the path the case was added from on the server, score) and its description.
"""

from __future__ import annotations

import base64
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..files.atomic import atomic_write
from ..imaging.volume import Volume
from ..localize.points import PointList
from ..localize.probe import LocalisationProbe
from ..localize.probe_file import load_localisation_probe, save_localisation_probe
from ..localize.result import LocalisationResult
from ..localize.template import LandmarkTemplate
from ..probes.probe_file import load_probe, save_probe
from ..report.probe_findings import FindingsProbe, as_findings_probe, check_findings_probe
from ..report.template import ReportTemplate
from ..report.template_files import template_mapping, templates_dir
from ..retrieval.records import CaseRecord
from ..retrieval.regions import BoxRegion, MaskRegion, Region, SphereRegion
from ..retrieval.result import QueryResult, RetrievalHit
from .payloads import decode_base64, files_of_probe, probe_of_files
from .wire import RAW, Frame

# a case library's id in the server's --libraries file (what clients send instead of a folder)
LIBRARY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
LIBRARY_ID_RE = re.compile(LIBRARY_ID_PATTERN)

# ---- localisation


def points_to_plain(points: PointList) -> dict[str, Any]:
    return {
        "names": list(points.names),
        "ras": np.asarray(points.ras, dtype=np.float64).tolist(),
        "descriptions": list(points.descriptions),
        "name": points.name,
        "missing": [bool(m) for m in points.missing],
    }


def points_from_plain(d: dict[str, Any]) -> PointList:
    ras = np.asarray(d.get("ras", []), dtype=np.float64)
    if ras.size and (ras.ndim != 2 or ras.shape[1] != 3):
        raise InputError(f"points must be N x 3 RAS positions, got shape {list(ras.shape)}.")
    return PointList(
        list(d.get("names", [])),
        ras.reshape(-1, 3),
        list(d.get("descriptions", [])),
        str(d.get("name", "")),
        np.asarray(d.get("missing", []), dtype=bool),
    )


def template_text(template: LandmarkTemplate) -> str:
    """A landmark template as base64 of its .npz file (the one template format)."""
    with tempfile.TemporaryDirectory() as tmp:
        return base64.b64encode(template.save(Path(tmp) / "template.npz").read_bytes()).decode("ascii")


def template_from_text(text: str) -> LandmarkTemplate:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "template.npz"
        path.write_bytes(decode_base64(text, "landmark template"))
        return LandmarkTemplate.load(path)


def localisation_probe_files(probe: LocalisationProbe) -> dict[str, str]:
    return files_of_probe(save_localisation_probe, probe)


def localisation_probe_from_files(d: dict[str, str]) -> LocalisationProbe:
    return probe_of_files(load_localisation_probe, d)


def localisation_frame(result: LocalisationResult, templates: list[LandmarkTemplate] | None = None) -> Frame:
    meta = {
        "points": points_to_plain(result.points),
        "method": result.method,
        "warnings": list(result.warnings),
        "seconds": float(result.seconds),
        "templates": [template_text(t) for t in templates or ()],
    }
    return Frame(meta, {"confidence": np.asarray(result.confidence, dtype=np.float64)})


def templates_from_frame(frame: Frame) -> list[LandmarkTemplate]:
    return [template_from_text(t) for t in frame.meta.get("templates", [])]


def localisation_from_frame(frame: Frame) -> LocalisationResult:
    m = frame.meta
    return LocalisationResult(
        points=points_from_plain(m["points"]),
        confidence=np.asarray(frame.arrays["confidence"], dtype=np.float64),
        method=str(m.get("method", "")),
        warnings=list(m.get("warnings", [])),
        seconds=float(m.get("seconds", 0.0)),
    )


# ---- retrieval


HIT_RECORD_FIELDS = ("case_id", "path", "series_uid", "patient_id", "study_uid", "added_at")


def region_to_plain(region: Region, upload) -> dict[str, Any]:
    """A query region as plain data; a mask goes through ``upload(Volume) -> sha`` (the volume store)."""
    if isinstance(region, BoxRegion):
        return {"kind": "box", "to_ras": np.asarray(region.to_ras).tolist(), "size": list(region.size)}
    if isinstance(region, SphereRegion):
        return {"kind": "sphere", "center": list(region.center_ras), "radius": float(region.radius)}
    if isinstance(region, MaskRegion):
        mask = Volume(np.asarray(region.mask).astype(np.uint8), region.ijk_to_ras, region.name)
        return {"kind": "mask", "mask": upload(mask), "name": region.name}
    raise InputError(f"a {type(region).__name__} cannot be sent to a server.")


def region_from_plain(d: dict[str, Any], fetch) -> Region:
    """The Region a plain description stands for; ``fetch(sha) -> Volume`` reads a mask from the store."""
    kind = d.get("kind")
    try:
        if kind == "box":
            return BoxRegion(np.asarray(d["to_ras"], dtype=np.float64), tuple(float(v) for v in d["size"]))
        if kind == "sphere":
            return SphereRegion(tuple(float(v) for v in d["center"]), float(d["radius"]))
        if kind == "mask":
            mask = fetch(d["mask"])
            return MaskRegion(np.asarray(mask.array) != 0, mask.ijk_to_ras, str(d.get("name") or "mask"))
    except (KeyError, TypeError) as exc:
        raise InputError(f"a {kind} region needs its fields ({exc}).") from None
    raise InputError(f"region kind {kind!r} is not box, sphere or mask.")


def query_frame(result: QueryResult) -> Frame:
    hits = [
        {
            **{k: getattr(h.case, k) for k in HIT_RECORD_FIELDS},
            "has_report": h.case.has_report,
            # a scene volume's content hash finds a node already showing it (never a file key: a server path)
            "source_key": h.case.source_key if h.case.source_key.startswith("volume:") else "",
            "score": float(h.score),
            "ras": None if h.ras is None else [float(v) for v in h.ras],
            "block_mm": h.block_mm,
        }
        for h in result.hits
    ]
    meta = {
        "hits": hits,
        "query": result.query,
        "embedding": result.embedding,
        "warnings": list(result.warnings),
        "search_seconds": float(result.search_seconds),
    }
    arrays = {}
    if result.region_center is not None:
        arrays["region_center"] = np.asarray(result.region_center, dtype=np.float64)
        arrays["region_half_extent"] = np.asarray(result.region_half_extent, dtype=np.float64)
    return Frame(meta, arrays)


def thumbnails_to_frame(frame: Frame, result: QueryResult, written: list[Path]) -> None:
    """Add the thumbnails written for ``result``'s hits (``write_thumbnails``): each PNG's bytes, its file name
    and its hit."""
    by_path = {str(p): p for p in written}
    entries = []
    for n, hit in enumerate(result.hits):
        if hit.thumbnail and hit.thumbnail in by_path:
            path = by_path[hit.thumbnail]
            frame.arrays[f"thumbnail{n}"] = np.frombuffer(path.read_bytes(), np.uint8)
            entries.append({"hit": n, "name": path.name})
    frame.meta["thumbnails"] = entries


def write_frame_thumbnails(frame: Frame, result: QueryResult, folder: str | Path) -> list[Path]:
    """The server's thumbnails of ``result`` written into ``folder`` under the names the server gave them (as
    `voxelfm query --thumbnails` names them); sets each hit's ``thumbnail``."""
    written = []
    for entry in frame.meta.get("thumbnails") or []:
        n, name = int(entry["hit"]), Path(str(entry["name"])).name  # a file name, never a path
        if not (0 <= n < len(result.hits) and name.endswith(".png") and f"thumbnail{n}" in frame.arrays):
            raise InputError(f"the server sent a malformed thumbnail entry {entry!r}.")
        data = frame.arrays[f"thumbnail{n}"].tobytes()
        path = atomic_write(Path(folder) / name, lambda p, b=data: p.write_bytes(b), suffix=".png")
        result.hits[n].thumbnail = str(path)
        written.append(path)
    return written


def query_from_frame(frame: Frame) -> QueryResult:
    m = frame.meta
    hits = []
    for h in m.get("hits", []):
        record = CaseRecord(
            row=-1,
            abs_path="",
            source_key=str(h.get("source_key") or ""),
            report="(on the server)" if h.get("has_report") else None,
            **{k: str(h.get(k) or "") for k in HIT_RECORD_FIELDS},
        )
        ras = None if h.get("ras") is None else np.asarray(h["ras"], dtype=np.float64)
        hits.append(RetrievalHit(record, float(h["score"]), ras, h.get("block_mm")))
    return QueryResult(
        hits,
        str(m.get("query", "")),
        str(m.get("embedding", "")),
        frame.arrays.get("region_center"),
        frame.arrays.get("region_half_extent"),
        list(m.get("warnings", [])),
        float(m.get("search_seconds", 0.0)),
    )


ANALYSIS_CODECS = {"confidence": RAW, "region_center": RAW, "region_half_extent": RAW}


# ---- report drafting


def findings_probe_to_plain(probe: Any) -> dict[str, Any]:
    """A findings probe (a path or loaded) as it travels: its files, and the name and path the draft's evidence
    shows (the client's, so the draft reads as a local one)."""
    found = as_findings_probe(probe)
    return {"name": found.name, "path": found.path, "files": files_of_probe(save_probe, found.probe)}


def findings_probe_from_plain(d: dict[str, Any]) -> FindingsProbe:
    found = FindingsProbe(str(d["name"]), probe_of_files(load_probe, d["files"]), str(d.get("path") or ""))
    check_findings_probe(found.probe, found.name)
    return found


def report_template_to_plain(template: ReportTemplate | None) -> dict[str, Any]:
    """A report template as it travels: a shipped one by name (the server has it), a file of this computer
    as its parsed contents and its path (named in the draft as locally); {} for the default."""
    if template is None:
        return {}
    source = Path(template.source)
    if source.parent.resolve() == templates_dir().resolve():
        return {"template": source.name.split(".")[0]}
    return {"template_file": {"source": str(source), "mapping": template_mapping(source)}}
