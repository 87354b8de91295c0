"""Report drafting in a Slicer scene: a volume, findings probes, segmentation nodes and a case library ->
a draft in a NEW text node, with the evidence of every sentence and where to jump for it.

    logic = ReportLogic(model="voxelfm-tiny", device="cpu")
    result = logic.run(volume_node, probes=["findings.json"], segmentation_nodes=[seg], library=library)
    result.text_node.GetText(); logic.targets(result.draft, 0); logic.save(result.text_node, "report")

All drafting is the core's ``ReportPipeline`` (shared with `voxelfm report`); this class moves MRML <-> core.
Three steps so a GUI can run the slow middle one on the worker thread: ``prepare`` (main thread: voxels and
segment measurements copied out of the scene) -> ``predict`` (any thread) -> ``write`` (main thread).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxelfm.client.analysis import remote_case_volume, remote_report
from voxelfm.errors import InputError
from voxelfm.features.service import FeatureService
from voxelfm.features.spec import ModelSpec
from voxelfm.files.file_kinds import REPORT_DRAFT
from voxelfm.files.outputs import OutputPlan
from voxelfm.imaging.volume import Volume
from voxelfm.progress import CancelFlag, ProgressFn, check_cancel
from voxelfm.report.draft import ReportDraft
from voxelfm.report.files import draft_paths, write_draft
from voxelfm.report.measurements import SegmentMeasurement
from voxelfm.report.neighbours import ConsensusConfig
from voxelfm.report.pipeline import ReportPipeline

from .capability_logic import CapabilityLogic
from .case_images import open_case_image, open_server_case
from .report_nodes import draft_of, sentence_at, write_report_node
from .report_server import server_segmentation
from .segment_measurements import measure_segmentation
from .server_compute import ServerCompute
from .volume_nodes import check_input_volume, ct_volume_from_node, volume_key


@dataclass
class ReportInputs:
    """Everything the pipeline needs, detached from MRML."""

    volume: Volume
    volume_node_id: str
    probes: list[Any] = field(default_factory=list)
    measurements: list[SegmentMeasurement] | None = None
    library: Any = None  # a library path or an open library (voxelfm.report.library_source)
    vlm: str | None = None  # a report-model run folder
    warnings: list[str] = field(default_factory=list)  # said with the draft (e.g. empty segments left out)
    segmentation: Any = None  # with a server: the measured segments as label layers (report_server)
    volume_key: str = ""  # the volume node's state when copied: a server logic hashes it once per state


@dataclass
class ReportResult:
    text_node: Any  # vtkMRMLTextNode holding the draft
    draft: ReportDraft
    kept_node: Any = None  # an edited draft node that was left as it was (the draft went to a new node)


@dataclass(frozen=True)
class JumpTarget:
    """What a sentence's evidence points at: a segment (centre RAS) or a similar case (its image)."""

    kind: str  # segment | case
    label: str
    segmentation_node_id: str = ""
    segment_id: str = ""
    ras: tuple[float, float, float] | None = None
    case_id: str = ""
    image: str = ""
    library: str = ""  # the id of the server library holding the case: its image is fetched from the server


class ReportLogic(CapabilityLogic):
    """Qt-free driver of report drafting; the module widget only calls these methods."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """``ReportLogic(model, device, precision, max_tokens, template=..., consensus=ConsensusConfig(...))``."""
        super().__init__(*args, **kwargs)
        self._generators: dict[str, Any] = {}

    def build_pipeline(
        self,
        spec: ModelSpec,
        service: FeatureService | None,
        template: Any = None,
        consensus: ConsensusConfig | None = None,
    ) -> ReportPipeline:
        return ReportPipeline(spec, template, consensus, service=service)

    # ---- the three steps

    def prepare(
        self,
        volume_node: Any,
        probes: list[Any] = (),
        segmentation_nodes: list[Any] = (),
        library: Any = None,
        vlm: str | None = None,
    ) -> ReportInputs:
        if volume_node is None:
            raise InputError("Select the CT volume to draft a report for.")
        volume = ct_volume_from_node(volume_node, "the CT to report on", world=True)
        measured = [m for node in segmentation_nodes if node is not None for m in measure_segmentation(node)]
        empty = [m.name for m in measured if m.voxels == 0]
        measured = [m for m in measured if m.voxels > 0]
        if not probes and not measured and library is None and not vlm:
            if empty:
                raise InputError(
                    f"Nothing to draft a report from: segment(s) {_quoted(empty)} are empty. Paint them, or add "
                    "findings probes, a case library with reports or a trained report model."
                )
            raise InputError(
                "Nothing to draft a report from: add findings probes, segmentations with segments, open a case "
                "library with reports or choose a trained report model."
            )
        warnings = [f"Segment(s) {_quoted(empty)} are empty and were left out of the draft."] if empty else []
        segmentation = None
        if self.server is not None:
            if vlm:
                raise InputError(
                    "A trained report model runs on this computer: draft without it on the server, or choose "
                    "'Compute: this computer'."
                )
            segmentation = server_segmentation(segmentation_nodes, measured)
        return ReportInputs(
            volume,
            volume_node.GetID(),
            list(probes),
            measured if segmentation_nodes else None,
            library,
            vlm or None,
            warnings,
            segmentation,
            volume_key(volume_node, world=True),
        )

    def predict(
        self, inputs: ReportInputs, progress: ProgressFn | None = None, cancel: CancelFlag | None = None
    ) -> ReportDraft:
        """The draft (safe on the worker thread: no MRML)."""
        check_cancel(cancel)
        if self.server is not None:
            return self._draft_on_server(inputs, progress, cancel)
        neighbours = None
        if inputs.library is not None:
            from voxelfm.report.library_source import library_neighbours

            neighbours = library_neighbours(inputs.library, self.pipeline.spec, self.pipeline.service)
        draft = self.pipeline.draft(
            inputs.volume,
            probes=inputs.probes,
            segmentation=inputs.measurements,
            neighbours=neighbours,
            generator=self._generator(inputs.vlm) if inputs.vlm else None,
            progress=progress,
            cancel=cancel,
        )
        draft.warnings = [*inputs.warnings, *draft.warnings]
        return draft

    def _draft_on_server(
        self, inputs: ReportInputs, progress: ProgressFn | None, cancel: CancelFlag | None
    ) -> ReportDraft:
        """``pipeline.draft`` on the server; ``library`` is then the id of one of the server's case libraries."""
        p = self.pipeline
        consensus = {
            "neighbours": p.config.k,
            "temperature": p.config.temperature,
            "min_support": p.config.min_support,
        }
        volume = self.server.known(inputs.volume, inputs.volume_key)
        library = None if inputs.library is None else str(inputs.library)
        run = self.server.remote(p.spec, p.options, progress, cancel)
        draft = remote_report(run, library, volume, inputs.segmentation, p.template, consensus, inputs.probes)
        for e in (e for s in draft.sentences for e in s.evidence if e.get("kind") == "neighbour"):
            e.pop("image", None)  # a path of the server's: the case is opened by library and case id
            e["server_library"] = library
        draft.warnings = [*inputs.warnings, *draft.warnings]
        return draft

    def write(
        self, inputs: ReportInputs, draft: ReportDraft, volume_node: Any, text_node: Any = None
    ) -> ReportResult:
        """Store the draft in a NEW text node (or in ``text_node`` if it is an unedited draft of ours)."""
        check_input_volume(volume_node, inputs.volume_node_id, "the draft was made", "draft it again")
        node, kept = write_report_node(volume_node.GetScene(), draft, volume_node, text_node)
        return ReportResult(node, draft, kept)

    def run(
        self,
        volume_node: Any,
        text_node: Any = None,
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
        **sources: Any,
    ) -> ReportResult:
        """All three steps on the calling thread (scripts, tests). ``sources`` are ``prepare``'s keywords
        (probes, segmentation_nodes, library, vlm), passed on as they are so the two cannot drift apart."""
        inputs = self.prepare(volume_node, **sources)
        return self.write(inputs, self.predict(inputs, progress, cancel), volume_node, text_node)

    def _generator(self, run: str) -> Any:
        key = str(Path(run).expanduser().resolve())
        if key not in self._generators:
            from voxelfm.report.vlm.pipeline import VLMReporter

            self._generators[key] = VLMReporter(key, self.pipeline.spec, service=self.pipeline.service)
        return self._generators[key]

    # ---- evidence, jumping, saving

    @staticmethod
    def sentence_index(text_node: Any, position: int) -> int | None:
        """The draft sentence at a cursor position of the (possibly edited) text."""
        return sentence_at(text_node.GetText() or "", position, draft_of(text_node))

    @staticmethod
    def target_of(evidence: dict[str, Any]) -> JumpTarget | None:
        """Where one evidence item can take the user: a segment's centroid or a similar case; else None."""
        e = evidence
        if e.get("kind") == "measurement" and e.get("quantity") == "centroid":
            ras = tuple(float(v) for v in e["value"])
            return JumpTarget(
                "segment", e["segment"], e.get("segmentation", ""), e.get("segment_id", ""), ras
            )
        if e.get("kind") == "neighbour":
            return JumpTarget(
                "case",
                f"{e['case_id']} (score {e['score']:.3f})",
                case_id=e["case_id"],
                image=e.get("image", ""),
                library=e.get("server_library", ""),
            )
        return None

    @classmethod
    def targets(cls, draft: ReportDraft, index: int) -> list[JumpTarget]:
        """Where sentence ``index`` can take the user: its segments (centroid) and its similar cases."""
        return [t for e in draft.sentences[index].evidence if (t := cls.target_of(e)) is not None]

    @staticmethod
    def jump_to_segment(scene: Any, target: JumpTarget) -> None:
        """Move every slice view to the segment's centroid."""
        import slicer

        if target.kind != "segment" or target.ras is None:
            raise InputError("This evidence is not a segment.")
        slicer.vtkMRMLSliceNode.JumpAllSlices(scene, *target.ras)

    @staticmethod
    def open_case(scene: Any, target: JumpTarget, server: ServerCompute | None = None) -> Any:
        """The similar case's image as a volume node: the node already showing it, else loaded once; a case of
        a server library is fetched from ``server`` (the logic's, ``.server``)."""
        if target.kind == "case" and target.library:
            if server is None:
                raise InputError(
                    f"Case {target.case_id} is in the server library {target.library}: choose 'Compute: server' "
                    "(the server that drafted the report) to open it."
                )
            client, library = server.client, target.library
            return open_server_case(
                scene,
                f"{library}/{target.case_id}",
                lambda: remote_case_volume(client, library, target.case_id),
                f"{target.case_id} (similar case)",
            )
        if target.kind != "case" or not target.image:
            raise InputError("The library does not know where this case's image is.")
        if not os.path.exists(target.image):
            raise InputError(f"The image of case {target.case_id} is not at {target.image} any more.")
        return open_case_image(scene, target.image, f"{target.case_id} (similar case)")

    @staticmethod
    def save(text_node: Any, path: str | os.PathLike, overwrite: bool = False) -> tuple[Path, Path]:
        """REPORT.txt (the text as edited) + REPORT.json (draft and evidence), both written atomically; a file
        that is not an earlier report draft (a probe header named REPORT.json, the user's text) is replaced
        only with ``overwrite`` (the CLI's output rule, ``voxelfm.files.outputs``)."""
        plan = OutputPlan(overwrite=overwrite, by="VoxelFM Report", hint="choose another name")
        for p in draft_paths(path):
            plan.output(p, "The report file", kind=REPORT_DRAFT)
        plan.check()
        written = write_draft(draft_of(text_node), path, text=text_node.GetText() or "")
        plan.done()
        return written


def _quoted(names: list[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)
