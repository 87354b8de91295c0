"""Landmark localisation in a Slicer scene: reference scans + point lists -> the core pipeline -> a new point list.

    logic = LocalisationLogic(model="voxelfm-tiny", device="cpu")
    out = logic.run(target_node, [(ref_volume_node, ref_points_node)], compare_node=None)
    out.node, out.result.confidence, out.distances       # the predictions, written as a NEW point list

All localisation behaviour (patient-aligned grids, matching, geometry, refinement, probes) is the core's
``LocalisationPipeline``, shared with `voxelfm localize`; this class only moves MRML <-> arrays. Three steps so a
GUI can run the slow middle one on a worker thread: ``prepare`` (main) -> ``predict`` (any) -> ``write`` (main).
Reference templates are kept per (reference voxels + world geometry, point labels + world positions, model), so
finding the same landmarks in several targets extracts the references' features once, and any edit of the
references (a dragged, added or renamed point, a transform, new voxels) is used by the next Find.

The module's buttons call ``find`` / ``apply_saved_probe`` / ``make_box`` with a ``LocalizeChoice`` (its
parameter node's nodes). Re-run rule: a result goes into the chosen result list only while that list is exactly
as VoxelFM wrote it; once the user has moved, added, removed, renamed or described a point in it (or put it
under a transform), it is kept and the result goes into a new list (``LocalisationOutput.note`` says so).
Nothing is written when the target was removed or changed while the landmarks were being found.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import slicer

from voxelfm.client.analysis import remote_localize, remote_localize_probe
from voxelfm.errors import InputError
from voxelfm.features.service import FeatureService
from voxelfm.features.spec import ModelSpec
from voxelfm.imaging.volume import Volume
from voxelfm.localize.boxes import box_from_mask, box_from_points
from voxelfm.localize.config import TransferConfig
from voxelfm.localize.pipeline import LocalisationPipeline, Reference
from voxelfm.localize.points import PointList
from voxelfm.localize.probe import LocalisationProbe
from voxelfm.localize.probe_file import load_localisation_probe
from voxelfm.localize.result import LocalisationResult
from voxelfm.localize.template import LandmarkTemplate
from voxelfm.progress import CancelFlag, ProgressFn, check_cancel, no_progress

from .capability_logic import CapabilityLogic, direct
from .markups_nodes import (
    distances_to_node,
    edited_by_user,
    is_prediction_node,
    points_from_node,
    write_points_node,
    write_roi_node,
)
from .segmentation_nodes import segment_mask_on_volume
from .volume_nodes import ct_refusal, ct_volume_from_node, node_ijk_to_ras, volume_key


@dataclass
class LocalisationInputs:
    """Everything the pipeline needs, detached from MRML."""

    target: Volume
    references: list[Reference | LandmarkTemplate]
    reference_keys: list[str]
    target_node_id: str
    input_node_ids: list[str] = field(default_factory=list)  # nodes we read: never written
    target_name: str = ""
    target_key: str = ""  # voxels + world geometry when copied: a result is written only if still the same


@dataclass
class LocalisationOutput:
    node: Any  # vtkMRMLMarkupsFiducialNode holding the predictions (created by us)
    result: LocalisationResult
    distances: dict[str, float] = field(default_factory=dict)  # to same-named points of ``compare_node``
    note: str = ""  # e.g. why the result went into a new list rather than the chosen one


@dataclass
class LocalizeChoice:
    """What the Localize module's parameter node holds: which nodes a Find / Apply probe / Box uses."""

    target: Any = None
    reference_volume: Any = None
    reference_points: Any = None
    second_reference_volume: Any = None
    second_reference_points: Any = None
    compare_points: Any = None
    output_points: Any = None
    box_corners: str = ""

    @classmethod
    def of(cls, parameters: Any) -> LocalizeChoice:
        """From the module's parameter node (its attribute names)."""
        return cls(
            parameters.targetVolume,
            parameters.referenceVolume,
            parameters.referencePoints,
            parameters.secondReferenceVolume,
            parameters.secondReferencePoints,
            parameters.comparePoints,
            parameters.outputPoints,
            parameters.boxCorners or "",
        )

    def references(self) -> list[tuple[Any, Any]]:
        """The first reference pair, and the second one when both its scan and its points are chosen."""
        pairs = [(self.reference_volume, self.reference_points)]
        if self.second_reference_volume and self.second_reference_points:
            pairs.append((self.second_reference_volume, self.second_reference_points))
        return pairs

    def corner_names(self) -> list[str] | None:
        """The box corner landmarks typed as "a, b" (None: every point of the result)."""
        return [n.strip() for n in self.box_corners.split(",") if n.strip()] or None


def check_target_unchanged(scene: Any, node_id: str, name: str, key: str, copied: Volume) -> None:
    """Refuse to write a result for a target removed or changed (voxels, geometry, transform) during the run.

    WHY: the GUI stays live while the worker runs; a result written for a volume no longer there (or no longer
    the one the landmarks were found in) is a wrong result the user cannot tell apart from a right one.
    """
    node = scene.GetNodeByID(node_id)
    if node is None:
        raise InputError(
            f"The target volume '{name}' was removed while the landmarks were being found; nothing was "
            "written. Select a target and find the landmarks again."
        )
    if volume_key(node, world=True) != key and not _same_volume(node, copied):
        raise InputError(
            f"The target volume '{name}' changed (voxels, geometry or transform) while the landmarks were being "
            "found; nothing was written. Find the landmarks again."
        )


def _same_volume(node: Any, copied: Volume) -> bool:
    """The node still holds the copied voxels on the same world grid (a modification stamp can move without a
    change, e.g. when Slicer recomputes something on the image; the copy settles it)."""
    if node.GetImageData() is None or ct_refusal(node):
        return False
    array = slicer.util.arrayFromVolume(node)
    return (
        array.shape == copied.array.shape
        and np.array_equal(array, copied.array)
        and np.allclose(node_ijk_to_ras(node, world=True), copied.ijk_to_ras, atol=1e-6)
    )


TEMPLATES_KEPT = 8  # reference templates kept per logic (a few reference sets; each is small)


def reference_key(volume_node: Any, points: PointList, spec: ModelSpec) -> str:
    """What a reference template is computed from: the scan's voxels and world geometry (parent transform
    included) and the points' labels, world positions, descriptions and count, with the model.

    WHY: moving a control point does not change the point list's MTime, and a parent transform is not part
    of the volume's own geometry; keying on node ids and MTimes reused stale references.
    """
    digest = hashlib.sha1()
    for name, description in zip(points.names, points.descriptions, strict=True):
        digest.update(f"{name}\x00{description}\x00".encode())
    digest.update(np.ascontiguousarray(points.ras, dtype=np.float64).tobytes())
    return f"{volume_key(volume_node, world=True)}|{len(points)}:{digest.hexdigest()}|{spec}"


class LocalisationLogic(CapabilityLogic):
    """Qt-free driver of one-shot and probe localisation; the module widget only calls these methods."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """``LocalisationLogic(model, device, precision, max_tokens, config=TransferConfig(...))``."""
        super().__init__(*args, **kwargs)
        self._templates: dict[str, LandmarkTemplate] = {}

    def build_pipeline(
        self, spec: ModelSpec, service: FeatureService | None, config: TransferConfig | None = None
    ) -> LocalisationPipeline:
        return LocalisationPipeline(spec, config, service=service)

    def prepare(self, target_node: Any, references: list[tuple[Any, Any]]) -> LocalisationInputs:
        """Copy the target and every (reference volume, reference points) pair out of the scene."""
        if target_node is None:
            raise InputError("Select the volume in which to find the landmarks.")
        target = ct_volume_from_node(target_node, "the target", world=True)
        if not references:
            raise InputError("Add at least one reference: a scan and the point list placed on it.")
        refs: list[Reference | LandmarkTemplate] = []
        keys, ids = [], [target_node.GetID()]
        for n, (volume_node, points_node) in enumerate(references):
            role = "the reference scan" if n == 0 else "the second reference scan"
            if volume_node is None:
                raise InputError("Each reference needs its scan (volume).")
            refusal = ct_refusal(volume_node)
            if refusal:
                raise InputError(f"Volume '{volume_node.GetName()}' cannot be {role}: {refusal}.")
            points = points_from_node(points_node)
            key = reference_key(volume_node, points, self.pipeline.spec)
            cached = self._templates.get(key)
            refs.append(cached or Reference(ct_volume_from_node(volume_node, role, world=True), points))
            keys.append(key)
            ids += [volume_node.GetID(), points_node.GetID()]
        return LocalisationInputs(
            target, refs, keys, target_node.GetID(), ids, target_node.GetName(), volume_key(target_node, True)
        )

    def predict(
        self, inputs: LocalisationInputs, progress: ProgressFn | None = None, cancel: CancelFlag | None = None
    ) -> LocalisationResult:
        """Templates (cached) then transfer (safe on the worker thread)."""
        progress = progress or no_progress
        check_cancel(cancel)
        if self.server is not None:
            return self._transfer_on_server(inputs, progress, cancel)
        templates = self.pipeline.templates(inputs.references, lambda f, m: progress(0.5 * f, m), cancel)
        for key, template in zip(inputs.reference_keys, templates, strict=True):
            self._templates.pop(key, None)
            self._templates[key] = template  # most recently used last
        while len(self._templates) > TEMPLATES_KEPT:
            self._templates.pop(next(iter(self._templates)))
        return self.pipeline.transfer(
            inputs.target, templates, lambda f, m: progress(0.5 + 0.5 * f, m), cancel
        )

    def _transfer_on_server(
        self, inputs: LocalisationInputs, progress: ProgressFn, cancel: CancelFlag | None
    ) -> LocalisationResult:
        """templates + transfer on the server, from the references themselves (a server logic keeps no templates
        here, so their order is the user's); each volume hashed once per node state, uploaded once."""
        known = self.server.known
        refs = [
            Reference(known(r.volume, key.split("|")[0]), r.points) if isinstance(r, Reference) else r
            for r, key in zip(inputs.references, inputs.reference_keys, strict=True)
        ]
        target = known(inputs.target, inputs.target_key)
        p = self.pipeline
        _, result = remote_localize(
            self.server.remote(p.spec, p.options, progress, cancel), target, refs, p.config
        )
        return result

    def write(
        self,
        inputs: LocalisationInputs,
        result: LocalisationResult,
        scene: Any,
        output_node: Any = None,
        compare_node: Any = None,
    ) -> LocalisationOutput:
        """Predictions into ``output_node`` if it is an earlier prediction of ours that the user has not edited,
        else into a new point list; nothing is written if the target was removed or changed meanwhile."""
        check_target_unchanged(
            scene, inputs.target_node_id, inputs.target_name, inputs.target_key, inputs.target
        )
        return self._write(result, scene, output_node, compare_node, inputs.input_node_ids)

    def _write(self, result, scene, output_node, compare_node, protected_ids) -> LocalisationOutput:
        if output_node is not None and output_node.GetID() in protected_ids:
            output_node = None  # a node we read from is never written
        kept = output_node is not None and is_prediction_node(output_node) and edited_by_user(output_node)
        distances = distances_to_node(result.points, compare_node)  # before writing: it may be the output
        node = write_points_node(scene, result.points, "VoxelFM landmarks", output_node)
        note = (
            f"'{output_node.GetName()}' has your edits and is kept as you left it; the landmarks are in a new "
            f"list '{node.GetName()}'."
            if kept and scene.IsNodePresent(output_node)
            else ""
        )
        return LocalisationOutput(node, result, distances, note)

    def run(
        self,
        target_node: Any,
        references: list[tuple[Any, Any]],
        output_node: Any = None,
        compare_node: Any = None,
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
    ) -> LocalisationOutput:
        """All three steps on the calling thread (scripts, tests, headless use)."""
        inputs = self.prepare(target_node, references)
        result = self.predict(inputs, progress, cancel)
        return self.write(inputs, result, target_node.GetScene(), output_node, compare_node)

    def find(
        self, choice: LocalizeChoice, scene: Any, in_worker: Callable[..., Any] = direct
    ) -> LocalisationOutput:
        """The "Find landmarks" button: prepare (main thread) -> predict (``in_worker``) -> write (main thread)."""
        inputs = self.prepare(choice.target, choice.references())
        result = in_worker(self.predict, inputs)
        return self.write(inputs, result, scene, choice.output_points, choice.compare_points)

    def apply_saved_probe(
        self,
        choice: LocalizeChoice,
        probe: LocalisationProbe | str | Path,
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
    ) -> LocalisationOutput:
        """The "Apply probe" button: the probe's landmarks in the chosen target, written by the same rule."""
        return self.apply_probe(
            choice.target, probe, choice.output_points, choice.compare_points, progress, cancel
        )

    def make_box(self, choice: LocalizeChoice, name: str = "VoxelFM box") -> Any:
        """The "Box" button: a new ROI spanned by the chosen corners of the current result list."""
        if choice.output_points is None:
            raise InputError("Find the landmarks first: the box is made from the result point list.")
        return self.box_from_points(choice.output_points, name, choice.corner_names())

    def apply_probe(
        self,
        target_node: Any,
        probe: LocalisationProbe | str | Path,
        output_node: Any = None,
        compare_node: Any = None,
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
    ) -> LocalisationOutput:
        """Landmarks of a saved localisation probe in a volume node (as `voxelfm localize --probe`)."""
        if target_node is None:
            raise InputError("Select the volume in which to find the landmarks.")
        if not isinstance(probe, LocalisationProbe):
            probe = load_localisation_probe(probe)
        scene, target_id, name = target_node.GetScene(), target_node.GetID(), target_node.GetName()
        target = ct_volume_from_node(target_node, "the target", world=True)
        key = volume_key(target_node, world=True)
        if self.server is not None:
            target, p = self.server.known(target, key), self.pipeline
            result = remote_localize_probe(
                self.server.remote(p.spec, p.options, progress, cancel), target, probe
            )
        else:
            result = self.pipeline.apply_probe(
                target, probe, progress, cancel
            )  # the GUI pumps events meanwhile
        check_target_unchanged(scene, target_id, name, key, target)
        return self._write(result, scene, output_node, compare_node, [target_id])

    def box_from_points(self, points_node: Any, name: str, corner_names: list[str] | None = None) -> Any:
        """A new ROI node spanned by corner landmarks of a point list (e.g. a prediction)."""
        box = box_from_points(points_from_node(points_node), name, corner_names)
        return write_roi_node(points_node.GetScene(), box)

    def box_from_segment(self, segmentation_node: Any, segment_id: str, volume_node: Any) -> Any:
        """A new ROI node around one segment (e.g. a few-shot prediction), along the volume's axes."""
        mask = segment_mask_on_volume(segmentation_node, segment_id, volume_node)
        name = segmentation_node.GetSegmentation().GetSegment(segment_id).GetName()
        box = box_from_mask(mask, node_ijk_to_ras(volume_node, world=True), f"{name} box")
        return write_roi_node(segmentation_node.GetScene(), box)
