"""Similar-case retrieval in a Slicer scene: volumes / ROIs / segments / points -> the core pipeline -> hits.

    logic = RetrievalLogic(device="cpu")
    logic.add_volume_nodes("cases/", [volume_node])               # build or extend a library
    result = logic.run_query("cases/", volume_node, k=5, roi_node=roi)
    view = logic.load_hit(scene, result.hits[0])                   # the case as a volume node + where to look
    jump_slices(scene, view.ras)

All retrieval behaviour (embeddings, the library, the index, thumbnails) is the core's ``RetrievalPipeline``,
shared with `voxelfm index` / `voxelfm query`; this class only turns nodes into arrays and regions. As in the
other logics, a query is ``prepare`` (main thread: MRML) -> ``predict`` (any thread) -> ``write`` (main thread:
the hit the user picks loaded as a volume node; ``load_hit``), and ``run`` (``run_query``) = prepare + predict;
adding is ``prepare_volumes`` (main thread) -> ``add`` (any thread), ``add_volume_nodes`` both. Query regions
are taken in world coordinates (parent transforms applied), so an ROI drawn on a transformed volume means what
the user sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import slicer

from voxelfm.client.analysis import remote_case_volume, remote_index_add, remote_query
from voxelfm.errors import InputError
from voxelfm.features.service import FeatureService
from voxelfm.features.spec import ModelSpec
from voxelfm.imaging.volume import Volume
from voxelfm.progress import CancelFlag, ProgressFn, check_cancel
from voxelfm.retrieval.indexing import AddReport
from voxelfm.retrieval.library import DB_NAME, CaseLibrary
from voxelfm.retrieval.pipeline import RetrievalPipeline
from voxelfm.retrieval.records import CaseRecord, CaseSource
from voxelfm.retrieval.regions import BoxRegion, MaskRegion, Region, SphereRegion
from voxelfm.retrieval.result import QueryResult, RetrievalHit
from voxelfm.retrieval.sources import expand_inputs

from .capability_logic import CapabilityLogic
from .case_images import node_file, node_showing, open_case_image, open_server_case, server_case_node
from .scene_guard import nodes_by_class, temporary_nodes
from .segmentation_nodes import segment_mask_on_volume
from .volume_nodes import (
    ct_refusal,
    ct_volume_from_node,
    matrix_to_numpy,
    node_ijk_to_ras,
    volume_key,
)


@dataclass
class QueryInputs:
    """A query detached from MRML: the volume (world geometry) and an optional region."""

    volume: Volume
    region: Region | None
    volume_node_id: str
    volume_key: str = ""  # node state when copied: a server logic hashes the voxels once per state


@dataclass
class SceneVolumes:
    """What "Add all loaded volumes" takes: the CT sources, and the names of the volumes it skipped (and why)."""

    sources: list[CaseSource]
    skipped: list[str]

    @property
    def note(self) -> str:
        return ("Skipped (not a CT): " + "; ".join(self.skipped) + ".") if self.skipped else ""


@dataclass
class HitView:
    """A hit loaded into the scene: its volume node and the RAS point to look at (None: whole volume)."""

    node: Any
    ras: np.ndarray | None
    hit: RetrievalHit


def roi_region(roi_node: Any) -> BoxRegion:
    """A markups ROI node as an oriented box in world RAS."""
    size = tuple(float(s) for s in roi_node.GetSize())
    if min(size) <= 0:
        raise InputError(
            f"The ROI '{roi_node.GetName()}' has zero size {list(size)}; place and size it on the image first."
        )
    return BoxRegion(matrix_to_numpy(roi_node.GetObjectToWorldMatrix()), size)  # type: ignore[arg-type]


def point_region(point_node: Any, radius_mm: float, index: int = 0) -> SphereRegion:
    if point_node.GetNumberOfControlPoints() <= index:
        raise InputError(
            f"The point list '{point_node.GetName()}' has no point {index + 1}; place one first."
        )
    pos = [0.0, 0.0, 0.0]
    point_node.GetNthControlPointPositionWorld(index, pos)
    return SphereRegion(tuple(pos), float(radius_mm))  # type: ignore[arg-type]


QUERY_MODES = ("volume", "roi", "segment", "point")
SEARCH_OPTIONS = ("embedding", "thumbnails", "progress", "cancel")  # predict's keywords after k


def query_kind(mode: str | None, regions: dict[str, Any]) -> str:
    """Which of ``QUERY_MODES`` a query is: ``mode`` when given (its node must be selected), else the one region
    node given ("volume" when none)."""
    if mode is None:
        given = [kind for kind, node in regions.items() if node is not None]
        if len(given) > 1:
            raise InputError("Query by one region at a time: an ROI, a segment or a point.")
        return given[0] if given else "volume"
    if mode not in QUERY_MODES:
        raise InputError(f"Unknown query mode '{mode}'; use volume, roi, segment or point.")
    if mode != "volume" and regions[mode] is None:
        what = {"roi": "an ROI", "segment": "a segmentation", "point": "a point list"}[mode]
        raise InputError(
            f"Query mode '{mode}' needs {what}: select one (or choose the 'volume' mode to search with the "
            "whole volume)."
        )
    return mode


def segment_region(volume_node: Any, segmentation_node: Any, segment_id: str | None) -> MaskRegion:
    """One segment as a mask on the query volume's grid (world RAS)."""
    if not segment_id:
        raise InputError(f"Select a segment of '{segmentation_node.GetName()}' to search with.")
    with temporary_nodes(volume_node.GetScene()):
        mask = segment_mask_on_volume(segmentation_node, segment_id, volume_node)
    name = segmentation_node.GetSegmentation().GetSegment(segment_id).GetName()
    return MaskRegion(mask, node_ijk_to_ras(volume_node, world=True), name)


def jump_slices(scene: Any, ras: np.ndarray | None) -> None:
    """Centre every slice view on ``ras`` (nothing when it is None)."""
    if ras is not None:
        r, a, s = (float(v) for v in ras)
        slicer.vtkMRMLSliceNode.JumpAllSlices(scene, r, a, s, slicer.vtkMRMLSliceNode.CenteredJumpSlice)


class RetrievalLogic(CapabilityLogic):
    """Qt-free driver of case libraries in Slicer; the module widget only calls these methods."""

    def build_pipeline(self, spec: ModelSpec, service: FeatureService | None) -> RetrievalPipeline:
        return RetrievalPipeline(spec, service=service)

    # ---- libraries

    @staticmethod
    def cases(library: str | Path) -> list[CaseRecord]:
        with CaseLibrary.open(library) as lib:
            return lib.cases()

    @staticmethod
    def describe(library: str | Path) -> str:
        """One line about a library (for the status label); raises InputError when there is none."""
        with CaseLibrary.open(library) as lib:
            ident = lib.identity or {}
            return f"{lib.count()} case(s), model {ident.get('id') or '-'}, {lib.dim or '-'}-d embeddings"

    @staticmethod
    def library_model(library: str | Path) -> str:
        """The model a library's adds and queries load when none is chosen (the one it was built with, as
        ``RetrievalPipeline.spec_for`` picks it); "" when there is no library there yet (the first add records
        the chosen or the default model)."""
        if not (Path(library) / DB_NAME).is_file():
            return ""
        with CaseLibrary.open(library) as lib:
            return lib.model_reference

    @staticmethod
    def remove_case(library: str | Path, case_id: str) -> CaseRecord:
        """Remove one case from the library (its image file is never touched), as `voxelfm index remove`."""
        with CaseLibrary.open(library, writer=True) as lib:
            record = lib.remove_case(case_id)
            lib.indexes.update()
        return record

    # ---- adding cases

    def prepare_volumes(
        self, volume_nodes: list[Any], report: str | None = None, findings: Any = None
    ) -> list[CaseSource]:
        """CaseSources of volume nodes (voxels copied now, on the main thread); a node loaded from a file keeps
        that file as its path, so adding the same file from the CLI later is recognised."""
        nodes = [n for n in volume_nodes if n is not None]
        if not nodes:
            raise InputError("Select at least one volume to add to the library.")
        if (report or findings) and len(nodes) > 1:
            raise InputError(
                "A report and findings describe one volume; add volumes one by one to attach them."
            )
        out = []
        for node in nodes:
            path = node_file(node)
            if path and not Path(path).exists():
                path = ""
            out.append(
                CaseSource(
                    path=path,
                    volume=ct_volume_from_node(node, "a library case"),
                    case_id=node.GetName() or "",
                    report=report,
                    findings=findings,
                )
            )
        return out

    def add(
        self,
        library: str | Path,
        sources: list[CaseSource],
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
    ):
        """Add prepared sources (any thread); an AddReport (failures listed in it, not raised). With a server,
        ``library`` is the id of one of its case libraries and each volume is uploaded and embedded there."""
        if self.server is not None:
            return self._add_on_server(str(library), sources, progress)
        return self.pipeline.add_sources(library, sources, progress, cancel)

    def _add_on_server(
        self, library: str, sources: list[CaseSource], progress: ProgressFn | None
    ) -> AddReport:
        report, p = AddReport(), self.pipeline
        run = self.server.remote(p.spec, p.options, progress, None)  # a server add takes no cancel
        for source in sources:
            if source.volume is None:
                raise InputError(
                    f"{source.path}: with a server, add volumes loaded in the scene (its files are this computer's)."
                )
            volume = source.volume
            volume.name = source.case_id or volume.name
            added = remote_index_add(run, library, volume, source.case_id, source.report, source.findings)
            report.added.append(
                CaseRecord(
                    -1, str(added["case_id"]), "", "", "server", added_at=str(added.get("added_at", ""))
                )
            )
        return report

    def add_volume_nodes(
        self, library: str | Path, volume_nodes: list[Any], progress=None, cancel=None, **kw
    ):
        return self.add(library, self.prepare_volumes(volume_nodes, **kw), progress, cancel)

    def prepare_scene_volumes(self, scene: Any) -> SceneVolumes:
        """What "Add all loaded volumes" takes: the scene's CT volumes (main thread). Labelmaps, colour volumes
        and empty nodes are skipped and named, so one of them never stops the whole add."""
        nodes, skipped = [], []
        for node in nodes_by_class(scene, "vtkMRMLVolumeNode"):
            refusal = ct_refusal(node)
            if refusal:
                skipped.append(f"'{node.GetName()}' ({refusal.split(';')[0]})")
            else:
                nodes.append(node)
        if not nodes:
            raise InputError(
                "No CT volume is loaded"
                + (f" ({'; '.join(skipped)})" if skipped else "")
                + "; load a CT first."
            )
        return SceneVolumes(self.prepare_volumes(nodes), skipped)

    def add_folder(self, library: str | Path, folder: str | Path, progress=None, cancel=None):
        """Add every CT below a folder (or the cases of a manifest); resumable like `voxelfm index add`."""
        return self.add(library, expand_inputs([str(folder)]), progress, cancel)

    # ---- queries: prepare -> predict -> write (load a hit); run = prepare + predict

    def prepare(
        self,
        volume_node: Any,
        roi_node: Any = None,
        segmentation_node: Any = None,
        segment_id: str | None = None,
        point_node: Any = None,
        radius_mm: float = 15.0,
        mode: str | None = None,
    ) -> QueryInputs:
        """The query volume and region, on the main thread. ``mode`` is the module's selector (volume, roi,
        segment, point): only that mode's node is used, and a mode whose node is not selected is an error (never
        a silent whole-volume query); without it, at most one of ROI, segment and point may be given."""
        kind = query_kind(mode, {"roi": roi_node, "segment": segmentation_node, "point": point_node})
        if volume_node is None:
            raise InputError("Select the volume to search with.")
        volume = ct_volume_from_node(volume_node, "the query volume", world=True)
        region: Region | None = None
        if kind == "roi":
            region = roi_region(roi_node)
        elif kind == "point":
            region = point_region(point_node, radius_mm)
        elif kind == "segment":
            region = segment_region(volume_node, segmentation_node, segment_id)
        return QueryInputs(volume, region, volume_node.GetID(), volume_key(volume_node, world=True))

    def predict(
        self,
        library: str | Path,
        inputs: QueryInputs,
        k: int = 10,
        embedding: str = "mean",
        thumbnails: str | Path | None = None,
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
    ) -> QueryResult:
        """Search the library (any thread); with ``thumbnails`` a folder, a PNG per hit is written there. With a
        server, ``library`` is the id of one of its case libraries (the server renders the thumbnails)."""
        if self.server is not None:
            volume = (
                self.server.known(inputs.volume, inputs.volume_key) if inputs.volume_key else inputs.volume
            )
            p = self.pipeline
            run = self.server.remote(p.spec, p.options, progress, cancel)
            return remote_query(run, str(library), volume, k, embedding, False, inputs.region, thumbnails)
        result = self.pipeline.query(
            library, inputs.volume, k, inputs.region, embedding, None, progress, cancel
        )
        check_cancel(cancel)
        if thumbnails:
            self.pipeline.thumbnails(result, inputs.volume, thumbnails)
        return result

    def write(self, scene: Any, hit: RetrievalHit, fetched: Volume | None = None) -> HitView:
        """The scene output of a query: the hit the user picks, as a volume node (a node already holding its
        case is reused) and the RAS to look at. A hit of a server's library is fetched from the server, or
        is ``fetched`` (``fetch_hit`` on the worker thread, so the download does not hold the GUI)."""
        record = hit.case
        node = self.loaded_node(scene, hit)
        key = self._server_key(record)
        if node is None and key is not None:
            fetch = (lambda: fetched) if fetched is not None else (lambda: self.fetch_hit(hit))
            node = open_server_case(scene, key, fetch, record.case_id)
        elif node is None:
            path = record.abs_path
            if not path or not Path(path).exists():
                raise InputError(
                    f"Case '{record.case_id}' cannot be opened: its image {path or '(a scene volume)'} is not "
                    "available; load it yourself to look at it."
                )
            node = open_case_image(scene, path, record.case_id)
        return HitView(node, None if hit.ras is None else np.asarray(hit.ras, dtype=np.float64), hit)

    def loaded_node(self, scene: Any, hit: RetrievalHit) -> Any:
        """The scene's node already holding the hit's case (its file, its voxels, or the server case), or None
        (main thread; ``fetch_hit`` is then needed for a server case)."""
        node = self._find_loaded(scene, hit.case)
        key = self._server_key(hit.case)
        return node if node is not None or key is None else server_case_node(scene, key)

    def fetch_hit(
        self, hit: RetrievalHit, progress: ProgressFn | None = None, cancel: CancelFlag | None = None
    ) -> Volume | None:
        """The image of a server library's hit, from the server (any thread: no scene); None for a case of a
        library of this computer."""
        if self._server_key(hit.case) is None:
            return None
        check_cancel(cancel)
        return remote_case_volume(self.server.client, hit.case.info["server_library"], hit.case.case_id)

    def _server_key(self, record: CaseRecord) -> str | None:
        library = record.info.get("server_library")
        if self.server is None or not library or record.abs_path:
            return None
        return f"{library}/{record.case_id}@{record.added_at}"

    def run(self, library: str | Path, volume_node: Any, k: int = 10, **options: Any) -> QueryResult:
        """prepare + predict on the calling thread (scripts, tests). ``options``: ``predict``'s keywords
        (``SEARCH_OPTIONS``) and ``prepare``'s (the region), passed on as they are so neither list is written
        twice. The hits are the answer: which one goes into the scene (``write``) is the user's choice."""
        search = {name: options.pop(name) for name in SEARCH_OPTIONS if name in options}
        return self.predict(library, self.prepare(volume_node, **options), k, **search)

    run_query = run  # the documented one-call name: run_query(library, volume_node, k).hits
    load_hit = write  # the documented name: load_hit(scene, hit).node

    @staticmethod
    def _find_loaded(scene: Any, record: CaseRecord) -> Any:
        """A CT volume node of the scene that holds this case (its file, or its voxels for scene cases).

        Only nodes that can be a CT are compared (never a labelmap or colour volume); the scene is indexed by
        class (no vtkCollection to own)."""
        if record.abs_path:
            node = node_showing(scene, record.abs_path)
            if node is not None:
                return node
        candidates = [n for n in nodes_by_class(scene, "vtkMRMLScalarVolumeNode") if not ct_refusal(n)]
        if record.source_key.startswith("volume:"):
            for node in candidates:
                if "volume:" + ct_volume_from_node(node).content_hash() == record.source_key:
                    return node
        return None


__all__ = [
    "QUERY_MODES",
    "HitView",
    "QueryInputs",
    "RetrievalLogic",
    "jump_slices",
    "point_region",
    "query_kind",
    "roi_region",
    "segment_region",
]
